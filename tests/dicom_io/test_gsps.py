"""The GSPS of a screened study: valid (dciodvfy), every image referenced, the pipeline's window,
the level styles and texts of :mod:`dicom_io.annotate`, polarity and multi-frame handled."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, pixel_array
from pydicom.uid import generate_uid

from dicom_io.annotate import finding_text
from dicom_io.deflate import read_header
from dicom_io.errors import InvalidArgumentError
from dicom_io.gsps import CONTENT_LABEL, PipelineVoi, _window_unit, build_gsps
from dicom_io.pixels import PixelPolicy, load_radiograph
from dicom_io.sr import AlgorithmInfo, SRFinding, write_sr

REPO = Path(__file__).resolve().parents[2]
ALGORITHM = AlgorithmInfo(version="1.0", operating_point_id="op-test", members=(("detr", "v1"),))
LEVELS = ["doubt", "fracture"]


def _sample_studies() -> dict[str, list[tuple[Path, Dataset]]]:
    studies: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    for path in sorted((REPO / "sample_data" / "archive").rglob("*.dcm")):
        ds = read_header(path)
        studies[str(ds.StudyInstanceUID)].append((path, ds))
    return studies


STUDIES = _sample_studies()


def _study(photometrics: set[str], body_part: str, sizes: int = 2) -> list[tuple[Path, Dataset]]:
    """A sample study with exactly these photometric interpretations, this body part and at
    least ``sizes`` image sizes."""
    for items in STUDIES.values():
        if ({str(ds.PhotometricInterpretation) for _, ds in items} == photometrics
                and {str(ds.BodyPartExamined) for _, ds in items} == {body_part}
                and len({(ds.Rows, ds.Columns) for _, ds in items}) >= sizes):
            return items
    pytest.skip(f"sample_data has no {body_part} study with {photometrics} in {sizes} sizes")


def _views(items: list[tuple[Path, Dataset]], policy: PixelPolicy = PixelPolicy()) -> dict[str, PipelineVoi]:
    return {str(ds.SOPInstanceUID): PipelineVoi.of(load_radiograph(path, policy)) for path, ds in items}


def _build(items: list[tuple[Path, Dataset]], findings: list[SRFinding], **kwargs: Any) -> Dataset:
    options: dict[str, Any] = dict(levels=LEVELS, views=_views(items), algorithm=ALGORITHM,
                                   series_instance_uid=generate_uid(), series_number=9902)
    options.update(kwargs)
    return build_gsps([ds for _, ds in items], findings, **options)


def _findings(items: list[tuple[Path, Dataset]]) -> list[SRFinding]:
    first, last = str(items[0][1].SOPInstanceUID), str(items[-1][1].SOPInstanceUID)
    return [SRFinding(first, (10.0, 20.0, 60.0, 90.0), 0.87, ("detr",), "fracture"),
            SRFinding(first, (70.5, 30.25, 120.0, 80.0), 0.41, ("detr",), "doubt"),
            SRFinding(last, None, 0.66, ("detr",), "doubt")]


def test_a_shoulder_study_of_mixed_sizes_and_polarity_validates_and_references_every_image(
        tmp_path: Path, sr_validator: Callable[..., Any]) -> None:
    items = _study({"MONOCHROME1", "MONOCHROME2"}, "SHOULDER")
    gsps = _build(items, _findings(items))
    path = write_sr(gsps, tmp_path / "gsps.dcm")
    results = sr_validator(path)
    assert results[0].errors == [] and results[0].warnings == []
    back = pydicom.dcmread(path)
    assert back.Modality == "PR" and back.ContentLabel == CONTENT_LABEL
    assert "AI screening result, not for primary diagnosis" in back.ContentDescription
    assert back.StudyInstanceUID == items[0][1].StudyInstanceUID and back.PatientID == items[0][1].PatientID
    assert back.SeriesInstanceUID not in {ds.SeriesInstanceUID for _, ds in items}
    assert back.BodyPartExamined == "SHOULDER" and back.Laterality in ("L", "R")  # 2C for a paired part
    referenced = {i.ReferencedSOPInstanceUID for s in back.ReferencedSeriesSequence for i in s.ReferencedImageSequence}
    assert referenced == {ds.SOPInstanceUID for _, ds in items}
    areas = {tuple(a.DisplayedAreaBottomRightHandCorner):
             {r.ReferencedSOPInstanceUID for r in a.ReferencedImageSequence}
             for a in back.DisplayedAreaSelectionSequence}
    assert areas == {(ds.Columns, ds.Rows): {u for _, d in items if (d.Columns, d.Rows) == (ds.Columns, ds.Rows)
                                             for u in [d.SOPInstanceUID]} for _, ds in items}
    # mixed polarity: one IDENTITY Presentation LUT, MONOCHROME1 images windowed by a descending LUT
    assert back.PresentationLUTShape == "IDENTITY"
    voi = {item.ReferencedImageSequence[0].ReferencedSOPInstanceUID: item for item in back.SoftcopyVOILUTSequence}
    for _, ds in items:
        item = voi[ds.SOPInstanceUID]
        if ds.PhotometricInterpretation == "MONOCHROME1":
            lut = item.VOILUTSequence[0]
            raw = lut.LUTData
            data = np.frombuffer(raw, dtype="<u2") if isinstance(raw, bytes) else np.asarray(raw)
            assert data[0] > data[-1]  # white at low values
        else:
            assert float(item.WindowCenter) == float(ds.WindowCenter)
            assert float(item.WindowWidth) == float(ds.WindowWidth)


def test_boxes_texts_and_level_styles(tmp_path: Path) -> None:
    items = _study({"MONOCHROME1", "MONOCHROME2"}, "SHOULDER")
    gsps = pydicom.dcmread(write_sr(_build(items, _findings(items)), tmp_path / "gsps.dcm"))
    layers = {layer.GraphicLayer: layer for layer in gsps.GraphicLayerSequence}
    assert set(layers) == {"AI_FRACTURE", "AI_DOUBT"}
    by_layer = defaultdict(list)
    for annotation in gsps.GraphicAnnotationSequence:
        by_layer[annotation.GraphicLayer].append(annotation)
    strict = by_layer["AI_FRACTURE"][0]
    box = strict.GraphicObjectSequence[0]
    assert box.GraphicAnnotationUnits == "PIXEL" and box.GraphicType == "POLYLINE"
    assert [float(v) for v in box.GraphicData] == [10, 20, 60, 20, 60, 90, 10, 90, 10, 20]  # col, row
    assert box.LineStyleSequence[0].LineDashingStyle == "SOLID"
    assert strict.TextObjectSequence[0].UnformattedTextValue == finding_text(0.87, "fracture")
    doubt_texts = [t.UnformattedTextValue for a in by_layer["AI_DOUBT"] for t in a.TextObjectSequence]
    assert finding_text(0.41, "doubt") in doubt_texts
    assert f"{finding_text(0.66, 'doubt')} (whole image)" in doubt_texts  # an image-level finding: text only
    dashed = [g for a in by_layer["AI_DOUBT"] for g in a.get("GraphicObjectSequence", [])]
    assert [g.LineStyleSequence[0].LineDashingStyle for g in dashed] == ["DASHED"]
    assert list(layers["AI_FRACTURE"].GraphicLayerRecommendedDisplayCIELabValue) != list(
        layers["AI_DOUBT"].GraphicLayerRecommendedDisplayCIELabValue)


def test_all_monochrome1_uses_inverse_and_plain_windows() -> None:
    items = [(p, ds) for study in STUDIES.values() for p, ds in study if ds.PhotometricInterpretation == "MONOCHROME1"]
    study = [(p, ds) for p, ds in items if ds.StudyInstanceUID == items[0][1].StudyInstanceUID]
    gsps = _build(study, [SRFinding(str(study[0][1].SOPInstanceUID), (1.0, 1.0, 9.0, 9.0), 0.9)], levels=[])
    assert gsps.PresentationLUTShape == "INVERSE"
    assert all("WindowCenter" in item for item in gsps.SoftcopyVOILUTSequence)


def test_a_percentile_window_reproduces_what_the_pipeline_saw() -> None:
    """An image windowed by percentiles (no usable VOI) gets that window: applying the GSPS's
    window to the modality values gives the pipeline's pixels."""
    items = _study({"MONOCHROME2"}, "SHOULDER", sizes=1)[:1]
    path, header = items[0]
    policy = PixelPolicy(use_voi=False)
    views = _views(items, policy)
    assert views[str(header.SOPInstanceUID)].source == "percentile"
    gsps = _build(items, [SRFinding(str(header.SOPInstanceUID), (1.0, 1.0, 9.0, 9.0), 0.9)], views=views, levels=[])
    item = gsps.SoftcopyVOILUTSequence[0]
    assert item.VOILUTFunction == "LINEAR" and item.WindowCenterWidthExplanation == "AI screening percentile window"
    full = pydicom.dcmread(path)
    modality = np.asarray(apply_modality_lut(pixel_array(full), full), dtype=np.float64)
    shown = _window_unit(modality, float(item.WindowCenter), float(item.WindowWidth), "LINEAR")
    seen = load_radiograph(path, policy).pixels
    assert np.abs(shown - seen).max() < 1.5 / (float(item.WindowWidth) - 1)  # within one modality step


def test_a_multi_frame_image_is_annotated_on_every_frame(tmp_path: Path, dataset_factory: Callable[..., Dataset],
                                                        sr_validator: Callable[..., Any]) -> None:
    word_sc = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word SC (screened when allowed)
    ds = dataset_factory(rows=40, cols=30, with_pixels=False, sop_class=word_sc, modality="OT", NumberOfFrames=3,
                         WindowCenter=2048, WindowWidth=4096)
    ds.PixelData = np.zeros((3, 40, 30), dtype=np.uint16).tobytes()
    uid = str(ds.SOPInstanceUID)
    gsps = build_gsps([ds], [SRFinding(uid, (2.0, 2.0, 20.0, 30.0), 0.9)], levels=[],
                      views={uid: PipelineVoi("window")}, algorithm=ALGORITHM,
                      series_instance_uid=generate_uid(), series_number=9902)
    assert "ReferencedFrameNumber" not in gsps.GraphicAnnotationSequence[0].ReferencedImageSequence[0]
    assert sr_validator(write_sr(gsps, tmp_path / "gsps.dcm"))[0].errors == []
    assert "TEST^SECRET" not in gsps.ContentDescription


def test_bad_arguments_are_refused_with_the_fix() -> None:
    items = _study({"MONOCHROME1", "MONOCHROME2"}, "SHOULDER")
    with pytest.raises(InvalidArgumentError, match="at least one"):
        _build(items, [])
    with pytest.raises(InvalidArgumentError, match="not among the sources"):
        _build(items, [SRFinding(generate_uid(), None, 0.5)], levels=[])
    with pytest.raises(InvalidArgumentError, match="needs a new one"):
        _build(items, _findings(items), series_instance_uid=str(items[0][1].SeriesInstanceUID))
