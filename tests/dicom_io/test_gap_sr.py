"""The not-screened SR: valid, in the study, saying "not screened by AI: <reason>", never "normal"."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_io.errors import InvalidArgumentError
from dicom_io.sr import AlgorithmInfo, write_sr
from dicom_io.sr.gap import build_gap_sr, not_screened_text


def test_gap_sr_validates_and_says_why(tmp_path: Path, sr_validator: Callable[..., Any],
                                       dataset_factory: Callable[..., Dataset]) -> None:
    study = generate_uid()
    sources = [dataset_factory(study_uid=study, with_pixels=False, BodyPartExamined="HAND") for _ in range(2)]
    algorithm = AlgorithmInfo(version="1.0", operating_point_id="op", members=(("detr", "v1"),), intended_use="demo")
    sr = build_gap_sr(sources, "out-of-scope: body part HAND\nnot in [SHOULDER]", algorithm=algorithm,
                      series_instance_uid=generate_uid(), series_number=9905)
    path = write_sr(sr, tmp_path / "gap.dcm")
    assert sr_validator(path)[0].errors == []
    back = pydicom.dcmread(path)
    assert back.StudyInstanceUID == study and back.Modality == "SR"
    texts = [item.TextValue for item in back.ContentSequence]
    assert texts[0] == "not screened by AI: out-of-scope: body part HAND not in [SHOULDER]"
    assert "DEMONSTRATION ONLY" in texts[-1]
    assert not any("normal" in text.lower() for text in texts)
    assert not_screened_text("") == "not screened by AI: no reason recorded"


def test_gap_sr_refuses_two_studies(dataset_factory: Callable[..., Dataset]) -> None:
    algorithm = AlgorithmInfo(version="1.0", operating_point_id="op", members=())
    with pytest.raises(InvalidArgumentError, match="one study"):
        build_gap_sr([dataset_factory(with_pixels=False) for _ in range(2)], "x", algorithm=algorithm,
                     series_instance_uid=generate_uid(), series_number=9905)
