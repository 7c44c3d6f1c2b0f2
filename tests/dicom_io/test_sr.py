"""DICOM SR of a screened study: built from real headers, validated, read back to the same values.

Sources: the phantom sample archive (``sample_data/archive``: CR without ImagerPixelSpacing and
DX with it, MONOCHROME1 and 2) and pydicom-data's ``RG3_UNCR.dcm`` (a real CR lacking
ImagerPixelSpacing, the highdicom 0.28 pitfall). Every SR written here goes through
``dciodvfy``; PixelMed's template validator runs on two of them in the default suite (one JVM)
and on all of them with ``-m slow``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pydicom
import pytest
from highdicom.sr import CodedConcept
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_io.errors import DicomIOError, InvalidArgumentError, SRError
from dicom_io.sr import AlgorithmInfo, SRFinding, build_screening_sr, read_sr, read_sr_findings, write_sr
from dicom_io.sr import codes as sr_codes
from dicom_io.sr.library import needs_library_guard

ARCHIVE = Path(__file__).resolve().parents[2] / "sample_data" / "archive"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
PATIENT_AND_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
    "AccessionNumber", "StudyDate", "StudyTime", "ReferringPhysicianName",
)  # fmt: skip
KNOWN_PIXELMED_WARNING = "Certainty of Finding"  # the study score under the decision (see content.py)
IMAGE_LIBRARY = CodedConcept("111028", "DCM", "Image Library")
HORIZONTAL_SPACING = CodedConcept("111026", "DCM", "Horizontal Pixel Spacing")

Validator = Callable[..., Any]


# --- sources ----------------------------------------------------------------------------------


def _archive_studies() -> dict[str, list[Dataset]]:
    if not ARCHIVE.is_dir():
        pytest.skip(f"the sample archive is missing at {ARCHIVE}")
    studies: dict[str, list[Dataset]] = defaultdict(list)
    for path in sorted(ARCHIVE.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        studies[str(ds.StudyInstanceUID)].append(ds)
    return studies


def _pick(studies: dict[str, list[Dataset]], modality: str, minimum: int) -> list[Dataset]:
    for headers in studies.values():
        if len(headers) >= minimum and all(h.Modality == modality for h in headers):
            return headers
    pytest.skip(f"no {modality} study with {minimum}+ images in the sample archive")


@pytest.fixture(scope="module")
def studies() -> dict[str, list[Dataset]]:
    return _archive_studies()


@pytest.fixture(scope="module")
def dx_study(studies: dict[str, list[Dataset]]) -> list[Dataset]:
    return _pick(studies, "DX", 2)


@pytest.fixture(scope="module")
def cr_study(studies: dict[str, list[Dataset]]) -> list[Dataset]:
    """A CR study (no ImagerPixelSpacing: every image needs the library guard)."""
    return _pick(studies, "CR", 3)


@pytest.fixture(scope="module")
def rg3() -> Dataset:
    path = get_testdata_file("RG3_UNCR.dcm")
    if path is None:
        pytest.skip("pydicom-data (RG3_UNCR.dcm) is not installed")
    return pydicom.dcmread(path, stop_before_pixels=True)


@pytest.fixture(scope="module")
def algorithm() -> AlgorithmInfo:
    return AlgorithmInfo(
        version="0.1.0+test",
        operating_point_id="op-2026-01-demo",
        members=(("pg-cls", "sha256:0a1b2c"), ("pg-det", "sha256:3d4e5f"), ("detr", "sha256:6a7b8c")),
        parameters={"vote": "2-of-3", "threshold:pg-cls": "0.41"},
    )


def _build(sources: list[Dataset], findings: list[SRFinding], algorithm: AlgorithmInfo, **kw: Any) -> Dataset:
    args: dict[str, Any] = dict(
        positive=bool(findings), score=0.5, algorithm=algorithm, series_instance_uid=generate_uid(),
        series_number=901, instance_number=1,
    )  # fmt: skip
    args.update(kw)
    return build_screening_sr(sources, findings, **args)


# --- the SRs every test below reads: built once, written once ----------------------------------


@pytest.fixture(scope="module")
def written(
    tmp_path_factory: pytest.TempPathFactory,
    dx_study: list[Dataset],
    cr_study: list[Dataset],
    rg3: Dataset,
    algorithm: AlgorithmInfo,
) -> dict[str, tuple[Path, Dataset, list[SRFinding], list[Dataset]]]:
    """name -> (path, built dataset, findings given, sources) for each scenario."""
    out = tmp_path_factory.mktemp("sr")
    a, b = (str(ds.SOPInstanceUID) for ds in dx_study[:2])
    c0, c1, c2 = (str(ds.SOPInstanceUID) for ds in cr_study[:3])
    scenarios: dict[str, tuple[list[Dataset], list[SRFinding], dict[str, Any]]] = {
        "positive": (
            dx_study,
            [
                SRFinding(a, (10.25, 20.5, 110.75, 95.125), 0.93, ("pg-det", "detr"), "high-specificity"),
                SRFinding(a, (200.0, 150.0, 260.0, 230.0), 0.61, ("detr",), "high-sensitivity"),
                SRFinding(b, (0.0, 0.0, 33.3333, 44.4444), 0.775, ("pg-det",)),
            ],
            {"score": 0.93, "institution_name": "Screening Test Site"},
        ),
        "box-and-image": (
            cr_study,
            [SRFinding(c0, (40.5, 60.5, 90.0, 99.0), 0.8, ("detr",)), SRFinding(c2, None, 0.7, ("pg-cls",))],
            {"score": 0.8},
        ),
        "classifier-only": (cr_study, [SRFinding(c1, None, 0.66, ("pg-cls",))], {"score": 0.66}),
        "negative": (cr_study, [], {"positive": False, "score": 0.031}),
        "guard-rg3": (
            [rg3],
            [SRFinding(str(rg3.SOPInstanceUID), (812.0, 900.5, 1012.25, 1100.0), 0.55, ("detr",))],
            {"score": 0.55},
        ),
    }
    result = {}
    for name, (sources, findings, kw) in scenarios.items():
        ds = _build(sources, findings, algorithm, **kw)
        result[name] = (write_sr(ds, out / f"{name}.dcm"), ds, findings, sources)
    # A re-screen that came back negative and supersedes the positive SR of the same study.
    previous = result["positive"][1]
    ds = _build(
        dx_study, [], algorithm, positive=False, score=0.2, series_instance_uid=previous.SeriesInstanceUID,
        instance_number=2, supersedes=[previous],
    )  # fmt: skip
    result["superseding"] = (write_sr(ds, out / "superseding.dcm"), ds, [], dx_study)
    return result


SCENARIOS = ["positive", "box-and-image", "classifier-only", "negative", "guard-rg3", "superseding"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_sr_passes_dciodvfy(written: dict[str, Any], sr_validator: Validator, name: str) -> None:
    (result,) = sr_validator(written[name][0])
    assert result.dciodvfy_errors == []


@pytest.mark.parametrize("name", SCENARIOS)
def test_read_back_gives_the_same_findings_decision_and_algorithm(
    written: dict[str, Any], algorithm: AlgorithmInfo, name: str
) -> None:
    path, built, findings, sources = written[name]
    back = read_sr(path)
    assert back.sop_instance_uid == built.SOPInstanceUID
    assert back.study_instance_uid == sources[0].StudyInstanceUID
    assert back.positive is bool(findings)
    assert back.algorithm == algorithm
    assert sorted(back.source_sop_instance_uids) == sorted(str(s.SOPInstanceUID) for s in sources)
    assert len(back.findings) == len(findings)
    for got, want in zip(back.findings, findings):
        assert got.source_sop_instance_uid == want.source_sop_instance_uid
        assert got.score == pytest.approx(want.score, abs=1e-9)
        assert got.members == want.members and got.level == want.level
        if want.box is None:
            assert got.box is None
        else:
            assert got.box is not None
            np.testing.assert_allclose(got.box, want.box, atol=1e-3)
    triples = read_sr_findings(path)
    assert [(uid, score) for uid, _, score in triples] == [
        (f.source_sop_instance_uid, pytest.approx(f.score)) for f in findings
    ]


def test_study_score_round_trips(written: dict[str, Any]) -> None:
    assert read_sr(written["positive"][0]).score == pytest.approx(0.93)
    assert read_sr(written["negative"][0]).score == pytest.approx(0.031)
    assert read_sr(written["superseding"][0]).score == pytest.approx(0.2)


@pytest.mark.parametrize("name", ["positive", "negative", "guard-rg3"])
def test_header_is_the_source_study_in_a_new_series(written: dict[str, Any], name: str) -> None:
    path, built, _, sources = written[name]
    sr = pydicom.dcmread(path)
    assert sr.SOPClassUID == COMPREHENSIVE_SR and sr.Modality == "SR"
    for keyword in PATIENT_AND_STUDY:
        assert str(sr.get(keyword, "")) == str(sources[0].get(keyword, "")), keyword
    assert sr.SeriesInstanceUID == built.SeriesInstanceUID
    assert sr.SeriesInstanceUID not in {s.SeriesInstanceUID for s in sources}
    assert sr.SeriesNumber == 901 and sr.InstanceNumber == 1
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    assert sr.get("InstitutionName") == ("Screening Test Site" if name == "positive" else None)
    evidence = {
        str(i.ReferencedSOPInstanceUID)
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for i in series.ReferencedSOPSequence
    }
    assert evidence == {str(s.SOPInstanceUID) for s in sources}


def _items(ds: Dataset) -> list[Dataset]:
    """Every content item of the tree, depth first."""
    found = []
    for item in ds.get("ContentSequence", []):
        found.append(item)
        found.extend(_items(item))
    return found


def _named(ds: Dataset, code: Any) -> list[Dataset]:
    return [
        i for i in _items(ds)
        if i.ConceptNameCodeSequence[0].CodeValue == code.value
        and i.ConceptNameCodeSequence[0].CodingSchemeDesignator == code.scheme_designator
    ]  # fmt: skip


def test_boxes_are_closed_polyline_rectangles_in_column_row_order(written: dict[str, Any]) -> None:
    path, _, findings, sources = written["positive"]
    sr = pydicom.dcmread(path)
    regions = [i for i in _items(sr) if i.ValueType == "SCOORD"]
    assert len(regions) == len(findings)
    for region, finding in zip(regions, findings):
        assert region.GraphicType == "POLYLINE"
        points = np.asarray(region.GraphicData, dtype=float).reshape(-1, 2)
        col0, row0, col1, row1 = finding.box  # type: ignore[misc]
        expected = [[col0, row0], [col1, row0], [col1, row1], [col0, row1], [col0, row0]]
        np.testing.assert_allclose(points, expected, atol=1e-3)
        referenced = region.ContentSequence[0].ReferencedSOPSequence[0]
        assert referenced.ReferencedSOPInstanceUID == finding.source_sop_instance_uid
        source = next(s for s in sources if s.SOPInstanceUID == finding.source_sop_instance_uid)
        assert referenced.ReferencedSOPClassUID == source.SOPClassUID


def test_findings_carry_type_certainty_and_the_decision_says_present(written: dict[str, Any]) -> None:
    sr = pydicom.dcmread(written["positive"][0])
    finding_types = [
        i for i in _items(sr)
        if i.ConceptNameCodeSequence[0].CodeValue == "121071" and i.ValueType == "CODE"
    ]  # fmt: skip
    assert len(finding_types) == 3
    assert {i.ConceptCodeSequence[0].CodeValue for i in finding_types} == {sr_codes.FRACTURE_OF_BONE.value}
    certainties = _named(sr, sr_codes.CERTAINTY_OF_FINDING)
    percents = sorted(float(c.MeasuredValueSequence[0].NumericValue) for c in certainties)
    assert percents == pytest.approx([61.0, 77.5, 93.0, 93.0])  # three boxes and the study
    units = {c.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue for c in certainties}
    assert units == {"%"}
    (decision,) = _named(sr, sr_codes.FRACTURE_OF_BONE)
    assert decision.ConceptCodeSequence[0].CodeValue == sr_codes.PRESENT.value
    (procedure,) = [i for i in _items(sr) if i.ConceptNameCodeSequence[0].CodeValue == "121058"]
    assert procedure.ConceptCodeSequence[0].CodeValue == "363679005"


def test_negative_study_says_absent_explicitly_and_has_no_regions(written: dict[str, Any]) -> None:
    sr = pydicom.dcmread(written["negative"][0])
    (decision,) = _named(sr, sr_codes.FRACTURE_OF_BONE)
    assert decision.ConceptCodeSequence[0].CodeValue == sr_codes.ABSENT.value
    assert [i for i in _items(sr) if i.ValueType == "SCOORD"] == []
    assert read_sr_findings(written["negative"][0]) == []


def test_image_level_finding_is_a_region_over_the_whole_image(written: dict[str, Any]) -> None:
    path, _, findings, sources = written["classifier-only"]
    sr = pydicom.dcmread(path)
    (region,) = [i for i in _items(sr) if i.ValueType == "SCOORD"]
    source = next(s for s in sources if s.SOPInstanceUID == findings[0].source_sop_instance_uid)
    points = np.asarray(region.GraphicData, dtype=float).reshape(-1, 2)
    assert points[:, 0].max() == source.Columns and points[:, 1].max() == source.Rows
    assert points.min() == 0.0
    assert read_sr_findings(path) == [(findings[0].source_sop_instance_uid, None, pytest.approx(0.66))]


def test_algorithm_identification_names_operating_point_and_member_versions(written: dict[str, Any]) -> None:
    sr = pydicom.dcmread(written["negative"][0])
    texts = [str(i.TextValue) for i in _items(sr) if i.ValueType == "TEXT"]
    assert "fracture-screen" in texts and "0.1.0+test" in texts
    for expected in (
        "operating-point=op-2026-01-demo",
        "member:pg-cls=sha256:0a1b2c",
        "member:detr=sha256:6a7b8c",
        "vote=2-of-3",
    ):
        assert expected in texts


def test_superseding_sr_references_its_predecessor(written: dict[str, Any]) -> None:
    old = written["positive"][1]
    path = written["superseding"][0]
    sr = pydicom.dcmread(path)
    (study,) = sr.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == old.StudyInstanceUID
    (series,) = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == old.SeriesInstanceUID
    (instance,) = series.ReferencedSOPSequence
    assert instance.ReferencedSOPInstanceUID == old.SOPInstanceUID
    assert instance.ReferencedSOPClassUID == COMPREHENSIVE_SR
    back = read_sr(path)
    assert back.predecessor_sop_instance_uids == (old.SOPInstanceUID,)
    assert back.sop_instance_uid != old.SOPInstanceUID
    assert read_sr(written["positive"][0]).predecessor_sop_instance_uids == ()


# --- the highdicom 0.28 ImagerPixelSpacing guard ----------------------------------------------


def test_guard_is_needed_for_real_cr_and_leaves_the_source_untouched(
    rg3: Dataset, written: dict[str, Any]
) -> None:
    assert "ImagerPixelSpacing" not in rg3 and rg3.Modality == "CR"
    assert needs_library_guard(rg3)
    assert rg3.Modality == "CR"  # building the SR (fixture above) did not change the header
    sr = pydicom.dcmread(written["guard-rg3"][0])
    library = _named(sr, IMAGE_LIBRARY)
    assert len(library) == 1
    entry = [i for i in _items(library[0]) if i.ValueType == "IMAGE"]
    assert [e.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for e in entry] == [rg3.SOPInstanceUID]
    descriptors = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in entry[0].ContentSequence}
    assert descriptors["Patient Orientation Row"].TextValue == "R"
    assert descriptors["Patient Orientation Column"].TextValue == "F"
    assert "Horizontal Pixel Spacing" not in descriptors  # never invented from PixelSpacing
    assert descriptors["Modality"].ConceptCodeSequence[0].CodeValue == "CR"  # from SOPClassUID, not the guard


def test_dx_library_keeps_highdicom_spacing_descriptors(
    written: dict[str, Any], dx_study: list[Dataset]
) -> None:
    assert not needs_library_guard(dx_study[0])
    sr = pydicom.dcmread(written["positive"][0])
    spacing = [float(i.MeasuredValueSequence[0].NumericValue) for i in _named(sr, HORIZONTAL_SPACING)]
    assert spacing and spacing[0] == pytest.approx(float(dx_study[0].ImagerPixelSpacing[1]))


def test_minimal_synthetic_cr_missing_type2_attributes_builds_and_validates(
    dataset_factory: Callable[..., Dataset], tmp_path: Path, sr_validator: Validator, algorithm: AlgorithmInfo
) -> None:
    """No ImagerPixelSpacing, no PatientOrientation, no birth date, accession, study ID or time."""
    src = dataset_factory(rows=64, cols=48)
    for keyword in ("PatientBirthDate", "AccessionNumber", "StudyID", "StudyTime", "PatientOrientation"):
        assert keyword not in src
    ds = _build([src], [SRFinding(src.SOPInstanceUID, (1.0, 2.0, 47.5, 63.0), 0.9)], algorithm, score=0.9)
    path = write_sr(ds, tmp_path / "minimal.dcm")
    sr_validator(path)
    assert "PatientBirthDate" not in src  # the source header was not changed
    sr = pydicom.dcmread(path)
    assert sr.PatientBirthDate == "" and sr.AccessionNumber == "" and sr.PatientID == "PID-1"
    np.testing.assert_allclose(read_sr_findings(path)[0][1], (1.0, 2.0, 47.5, 63.0), atol=1e-3)


# --- PixelMed (TID 1500 template) --------------------------------------------------------------


def _check_pixelmed(results: list[Any]) -> None:
    for result in results:
        assert result.pixelmed_ran and result.pixelmed_errors == []
        unexpected = [w for w in result.pixelmed_warnings if KNOWN_PIXELMED_WARNING not in w]
        assert unexpected == [], f"new PixelMed warnings for {result.path.name}: {unexpected}"


def test_pixelmed_template_check(written: dict[str, Any], sr_validator: Validator) -> None:
    """One JVM: the single-region case (PixelMed's strict TID 1410 path) and a negative superseding SR."""
    _check_pixelmed(sr_validator(written["guard-rg3"][0], written["superseding"][0], pixelmed=True))


@pytest.mark.slow
def test_pixelmed_template_check_every_scenario(written: dict[str, Any], sr_validator: Validator) -> None:
    _check_pixelmed(sr_validator(*(written[name][0] for name in SCENARIOS), pixelmed=True))


# --- the validators can fail ---------------------------------------------------------------------


def test_validator_fails_a_broken_sr(written: dict[str, Any], tmp_path: Path, sr_validator: Validator) -> None:
    broken = pydicom.dcmread(written["negative"][0])
    del broken.ContentDate
    broken.save_as(tmp_path / "broken.dcm")
    with pytest.raises(pytest.fail.Exception, match="ContentDate"):
        sr_validator(tmp_path / "broken.dcm")


def test_validator_fails_in_ci_without_dciodvfy_and_skips_elsewhere(
    written: dict[str, Any], sr_validator: Validator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="dicom3tools"):
        sr_validator(written["negative"][0])
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="dicom3tools"):
        sr_validator(written["negative"][0])


# --- inputs are validated with messages that say what to do ---------------------------------------


def test_write_is_atomic_and_replaces(written: dict[str, Any], tmp_path: Path) -> None:
    built = written["positive"][1]
    target = tmp_path / "nested" / "out.dcm"
    target.parent.mkdir()
    target.write_bytes(b"old partial junk")
    assert write_sr(built, target) == target
    assert pydicom.dcmread(target).SOPInstanceUID == built.SOPInstanceUID
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.dcm"]


def test_rebuilding_with_the_same_uid_gives_the_same_content(
    dx_study: list[Dataset], algorithm: AlgorithmInfo, tmp_path: Path
) -> None:
    uid = generate_uid()
    finding = [SRFinding(dx_study[0].SOPInstanceUID, (5.0, 5.0, 50.0, 50.0), 0.7)]
    one, two = (_build(dx_study, finding, algorithm, sop_instance_uid=uid) for _ in range(2))
    uids = [[str(i.UID) for i in _items(d) if i.ValueType == "UIDREF"] for d in (one, two)]
    assert uids[0] == uids[1] and uids[0]
    assert read_sr(one) == read_sr(two)


def test_box_within_tolerance_is_clamped(dx_study: list[Dataset], algorithm: AlgorithmInfo) -> None:
    src = dx_study[0]
    box = (-0.0004, 0.0, src.Columns + 0.0004, float(src.Rows))
    ds = _build(dx_study, [SRFinding(src.SOPInstanceUID, box, 1.0)], algorithm, score=1.0)
    ((_, got, score),) = read_sr_findings(ds)
    assert got == (0.0, 0.0, float(src.Columns), float(src.Rows)) and score == 1.0


BAD_BUILDS: dict[str, tuple[Callable[[list[Dataset], list[Dataset], AlgorithmInfo], Any], str]] = {
    "finding-on-unknown-image": (
        lambda dx, cr, alg: _build(dx, [SRFinding(str(cr[0].SOPInstanceUID), None, 0.5)], alg),
        "not among the sources",
    ),
    "box-outside-image": (
        lambda dx, cr, alg: _build(
            dx, [SRFinding(str(dx[0].SOPInstanceUID), (0.0, 0.0, dx[0].Columns + 1.0, 10.0), 0.5)], alg
        ),
        "reaches outside its image",
    ),
    "negative-with-findings": (
        lambda dx, cr, alg: _build(dx, [SRFinding(str(dx[0].SOPInstanceUID), None, 0.5)], alg, positive=False),
        "negative study cannot",
    ),
    "two-studies": (lambda dx, cr, alg: _build([dx[0], cr[0]], [], alg), "one SR reports on one study"),
    "no-sources": (lambda dx, cr, alg: _build([], [], alg), "non-empty sequence"),
    "score-percent": (lambda dx, cr, alg: _build(dx, [], alg, score=93.0), r"in \[0, 1\] \(a probability"),
    "series-number": (lambda dx, cr, alg: _build(dx, [], alg, series_number=0), "series_number"),
    "series-of-a-source": (
        lambda dx, cr, alg: _build(dx, [], alg, series_instance_uid=str(dx[1].SeriesInstanceUID)),
        "needs a new series",
    ),
    "manufacturer-too-long": (lambda dx, cr, alg: _build(dx, [], alg, manufacturer="m" * 65), "at most 64"),
    "supersedes-other-study": (
        lambda dx, cr, alg: _build(dx, [], alg, supersedes=[_build(cr, [], alg)]),
        "another study",
    ),
    "supersedes-itself": (
        lambda dx, cr, alg: _build(
            dx, [], alg, sop_instance_uid="1.2.3.4",
            supersedes=[_build(dx, [], alg, sop_instance_uid="1.2.3.4")],
        ),  # fmt: skip
        "own SOP Instance UID",
    ),
}


@pytest.mark.parametrize("case", list(BAD_BUILDS))
def test_bad_build_arguments_are_refused_with_the_fix(
    dx_study: list[Dataset], cr_study: list[Dataset], algorithm: AlgorithmInfo, case: str
) -> None:
    call, message = BAD_BUILDS[case]
    with pytest.raises(InvalidArgumentError, match=message) as info:
        call(dx_study, cr_study, algorithm)
    assert isinstance(info.value, DicomIOError) and info.value.reason == "invalid-argument"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"box": (10.0, 0.0, 5.0, 8.0)}, "empty or inverted"),
        ({"box": (0.0, 0.0, float("nan"), 8.0)}, "finite"),
        ({"box": (0.0, 0.0, 1.0)}, "4 finite numbers"),
        ({"score": 1.5}, r"in \[0, 1\]"),
        ({"score": "high"}, "a number"),
        ({"members": "detr"}, "wrap it"),
        ({"members": ("de,tr",)}, "contains ','"),
        ({"source_sop_instance_uid": ""}, "non-empty UID"),
    ],
)
def test_finding_validation(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"source_sop_instance_uid": "1.2.3", "box": None, "score": 0.5}
    args.update(kwargs)
    with pytest.raises(InvalidArgumentError, match=message):
        SRFinding(**args)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"members": (("detr", "a"), ("detr", "b"))}, "unique"),
        ({"members": (("detr",),)}, "pair"),
        ({"parameters": {"operating-point": "x"}}, "set by the SR writer"),
        ({"parameters": {"member:detr": "x"}}, "set by the SR writer"),
        ({"parameters": {"vote": 2}}, "must be a string"),
        ({"name": "x" * 65}, "at most 64"),
        ({"version": ""}, "non-empty"),
    ],
)
def test_algorithm_info_validation(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"version": "1", "operating_point_id": "op", "members": (("detr", "v"),)}
    args.update(kwargs)
    with pytest.raises(InvalidArgumentError, match=message):
        AlgorithmInfo(**args)


def test_highdicom_failure_becomes_sr_error_without_patient_name(
    dataset_factory: Callable[..., Dataset], algorithm: AlgorithmInfo
) -> None:
    not_an_image = dataset_factory(sop_class="1.2.840.10008.5.1.4.1.1.88.11", PatientName="SECRETNAME^Anna")
    with pytest.raises(SRError) as info:
        _build([not_an_image], [], algorithm)
    assert info.value.reason == "sr-failed"
    assert "SECRETNAME" not in str(info.value) and "Anna" not in str(info.value)
    assert str(not_an_image.StudyInstanceUID) in str(info.value)


def test_reading_something_else_is_an_sr_error(tmp_path: Path, rg3: Dataset) -> None:
    with pytest.raises(SRError):
        read_sr(tmp_path / "missing.dcm")
    with pytest.raises(SRError):
        read_sr(rg3)
    other_sr = get_testdata_file("test-SR.dcm")
    if other_sr is not None:
        with pytest.raises(SRError):
            read_sr(other_sr)


def test_sources_are_never_modified(cr_study: list[Dataset], algorithm: AlgorithmInfo) -> None:
    before = [ds.to_json_dict() for ds in cr_study]
    _build(cr_study, [SRFinding(cr_study[0].SOPInstanceUID, None, 0.9)], algorithm)
    assert [ds.to_json_dict() for ds in cr_study] == before


def test_redact_names_removes_the_name_and_its_parts(dataset_factory: Callable[..., Dataset]) -> None:
    from dicom_io.sr.library import redact_names

    ds = dataset_factory(PatientName="SECRETNAME^Anna")
    text = redact_names("bad value 'SECRETNAME^Anna' (Anna) in 1.2.3", [ds])
    assert "SECRETNAME" not in text and "Anna" not in text and "1.2.3" in text
