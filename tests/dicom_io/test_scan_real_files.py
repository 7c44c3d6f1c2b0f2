"""scan_archive over real DICOM files: pydicom's bundled test files and the pydicom-data package.

Provenance: see tests/dicom_io/README.md. Every file gets exactly one row, the run never
crashes, the real CR radiographs are selected and decode, the broken files fail with a reason,
and the DICOMDIR test set groups into the studies and series its DICOMDIR records say.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet

from dicom_io.index import group_studies
from dicom_io.scan import ScanResult, scan_archive
from dicom_io.select import SelectionRules

#: Every image kind, no duplicate suppression: the point is to push every file through.
PERMISSIVE = SelectionRules(
    modalities=("*",), allow_burned_in=True, allow_derived=True, allow_secondary_capture=True, deduplicate=False
)


def _root(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not installed (pip install pydicom-data)")
    return Path(path).parent


@pytest.fixture(scope="module")
def pydicom_files() -> ScanResult:
    return scan_archive(_root("CT_small.dcm"), rules=PERMISSIVE, decode=True, workers=2)


@pytest.fixture(scope="module")
def pydicom_data_files() -> ScanResult:
    return scan_archive(_root("RG3_UNCR.dcm"), rules=PERMISSIVE, decode=True, workers=2)


def _files_under(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.is_file() or (p.is_symlink() and not p.is_dir())}


@pytest.mark.parametrize("fixture, probe", [("pydicom_files", "CT_small.dcm"), ("pydicom_data_files", "RG3_UNCR.dcm")],
                         ids=["pydicom", "pydicom-data"])
def test_every_file_has_exactly_one_row(fixture: str, probe: str, request: pytest.FixtureRequest) -> None:
    result: ScanResult = request.getfixturevalue(fixture)
    paths = [str(r.path) for r in result.rows]
    assert len(paths) == len(set(paths))
    assert set(paths) == _files_under(_root(probe))
    # an exception type the pipeline did not expect would surface as "error"/"worker-crashed"
    assert not [(r.path.name, r.message) for r in result.rows if r.reason in ("error", "worker-crashed", "timeout")]


def _row(result: ScanResult, name: str):  # type: ignore[no-untyped-def]
    (row,) = [r for r in result.rows if r.path.name == name]
    return row


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_UNCI.dcm", "RG1_J2KI.dcm",
                                  "RG3_UNCR.dcm", "RG3_J2KR.dcm", "RG3_UNCI.dcm", "RG3_J2KI.dcm"])
def test_real_cr_radiographs_are_selected_by_default_rules_and_decode(pydicom_data_files: ScanResult, name: str) -> None:
    row = _row(pydicom_data_files, name)
    assert (row.outcome, row.reason) == ("selected", "")
    assert row.instance is not None and row.instance.modality == "CR"
    assert row.instance.photometric == "MONOCHROME1"
    assert row.voi_source  # decoded through the pixel pipeline
    one = scan_archive(row.path)
    assert [(r.outcome, r.reason) for r in one.rows] == [("selected", "")]


@pytest.mark.parametrize(
    "name, fixture, outcome, reason",
    [
        ("MR_truncated.dcm", "pydicom_files", "failed", "truncated-pixel-data"),
        ("no_meta.dcm", "pydicom_files", "failed", "not-dicom"),
        ("meta_missing_tsyntax.dcm", "pydicom_files", "failed", "missing-uid"),
        # its JPEG 2000 header says 1024x3722445056 pixels where the DICOM header says 1024x256:
        # refused before any decoder runs
        ("JPEG2000-embedded-sequence-delimiter.dcm", "pydicom_files", "failed", "frame-header-mismatch"),
        ("emri_small_jpeg_2k_lossless_too_short.dcm", "pydicom_data_files", "failed", "truncated-pixel-data"),
        ("DICOMDIR-nopatient", "pydicom_files", "skipped", "dicomdir"),
        ("DICOMDIR-nooffset", "pydicom_files", "skipped", "dicomdir"),
        # pydicom 3 reads these leniently: the parts a screener uses are intact, so they are
        # classified by content (an RT plan and an RT dose are not images; the CT decodes).
        ("rtplan_truncated.dcm", "pydicom_files", "skipped", "non-image-object"),
        ("badVR.dcm", "pydicom_files", "skipped", "non-image-object"),
        ("bad_sequence.dcm", "pydicom_data_files", "selected", ""),
    ],
)
def test_files_meant_to_fail(name: str, fixture: str, outcome: str, reason: str, request: pytest.FixtureRequest) -> None:
    row = _row(request.getfixturevalue(fixture), name)
    assert (row.outcome, row.reason) == (outcome, reason), row.message
    if outcome == "failed":
        assert row.message


def test_dicomdir_test_set_groups_like_its_dicomdir() -> None:
    root = _root("CT_small.dcm") / "dicomdirtests"
    result = scan_archive(root, rules=PERMISSIVE)
    fileset = FileSet(pydicom.dcmread(root / "DICOMDIR"))
    referenced = {Path(inst.path).resolve() for inst in fileset}
    # the folder also holds TINY_ALPHA, a set its DICOMDIR does not list
    indexed = [r.instance for r in result.rows if r.instance is not None and r.path.resolve() in referenced]
    assert len(indexed) == len(referenced)
    ours = {
        study.study_instance_uid: {s.series_instance_uid: {i.sop_instance_uid for i in s.instances} for s in study.series.values()}
        for study in group_studies(indexed).values()
    }
    expected: dict[str, dict[str, set[str]]] = collections.defaultdict(lambda: collections.defaultdict(set))
    for inst in fileset:
        expected[inst.StudyInstanceUID][inst.SeriesInstanceUID].add(inst.SOPInstanceUID)
    assert ours == {k: dict(v) for k, v in expected.items()}
    cr = [s for s in group_studies(indexed).values() if s.first.modality == "CR"]
    assert len(cr) == 1 and len(cr[0].series) == 3  # 77654033: one CR study, three series
