"""The annotated Secondary Capture: valid, a new object in the study, the pipeline's pixels with
the boxes burned in and the banner, the source never touched."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_io.annotate import DOUBT_COLOUR, STRICT_COLOUR
from dicom_io.deflate import read_header
from dicom_io.errors import InvalidArgumentError
from dicom_io.pixels import load_radiograph
from dicom_io.sc import build_sc
from dicom_io.sr import AlgorithmInfo, SRFinding, write_sr

REPO = Path(__file__).resolve().parents[2]
ALGORITHM = AlgorithmInfo(version="1.0", operating_point_id="op-test", members=(("detr", "v1"),))


def _source() -> Path:
    for path in sorted((REPO / "sample_data" / "archive").rglob("*.dcm")):
        ds = read_header(path)
        if ds.BodyPartExamined == "SHOULDER" and ds.PhotometricInterpretation == "MONOCHROME1":
            return path
    pytest.skip("sample_data has no MONOCHROME1 shoulder image")


def test_sc_validates_and_shows_the_pipeline_pixels_with_boxes(tmp_path: Path,
                                                               sr_validator: Callable[..., Any]) -> None:
    source = _source()
    before = source.read_bytes()
    header, radiograph = read_header(source), load_radiograph(source)
    uid = str(header.SOPInstanceUID)
    findings = [SRFinding(uid, (20.0, 30.0, 120.0, 140.0), 0.87, ("detr",), "fracture"),
                SRFinding(uid, (150.0, 160.0, 250.0, 260.0), 0.4, ("detr",), "doubt")]
    sc = build_sc(header, radiograph.pixels, findings, levels=["doubt", "fracture"], algorithm=ALGORITHM,
                  series_instance_uid=generate_uid(), series_number=9903, instance_number=1)
    path = write_sr(sc, tmp_path / "sc.dcm")
    assert sr_validator(path)[0].errors == []
    back = pydicom.dcmread(path)
    assert back.BurnedInAnnotation == "YES" and list(back.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert back.SOPInstanceUID != uid and back.SeriesInstanceUID != header.SeriesInstanceUID
    assert back.StudyInstanceUID == header.StudyInstanceUID
    assert back.SourceImageSequence[0].ReferencedSOPInstanceUID == uid
    assert back.BodyPartExamined == "SHOULDER" and back.Laterality == header.ImageLaterality
    assert list(back.PatientOrientation) == list(header.PatientOrientation)
    assert back.ImageComments == "AI screening result, not for primary diagnosis"
    rgb = back.pixel_array
    strip = rgb.shape[0] - radiograph.rows  # the banner is a strip above the image
    assert strip > 0 and rgb.shape[1] == radiograph.cols
    assert rgb[:strip].max() >= 250 and rgb[:strip].min() == 0  # white (anti-aliased) text on black
    image = rgb[strip:]
    grey = np.rint(radiograph.pixels * 255).astype(int)
    untouched = image[radiograph.rows - 5, 5]  # far from any box: the pipeline's grey (MONOCHROME1 inverted)
    assert abs(int(untouched[0]) - grey[radiograph.rows - 5, 5]) <= 1 and len(set(untouched)) == 1
    assert tuple(image[100, 20]) == STRICT_COLOUR  # the strict box's left edge
    assert tuple(image[200, 150]) == DOUBT_COLOUR or tuple(image[200, 151]) == DOUBT_COLOUR
    assert source.read_bytes() == before  # the source is only read


def test_sc_refuses_findings_of_another_image_and_wrong_pixels() -> None:
    source = _source()
    header, radiograph = read_header(source), load_radiograph(source)
    options: dict[str, Any] = dict(levels=[], algorithm=ALGORITHM, series_instance_uid=generate_uid(),
                                   series_number=9903, instance_number=1)
    with pytest.raises(InvalidArgumentError, match="must be on the source image"):
        build_sc(header, radiograph.pixels, [SRFinding(generate_uid(), None, 0.5)], **options)
    with pytest.raises(InvalidArgumentError, match="Radiograph.pixels"):
        build_sc(header, radiograph.pixels[:10], [SRFinding(str(header.SOPInstanceUID), None, 0.5)], **options)
    with pytest.raises(InvalidArgumentError, match="at least one"):
        build_sc(header, radiograph.pixels, [], **options)
