"""Fixtures shared by every test package: synthetic DICOM files written to ``tmp_path``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"

WriteDicom = Callable[..., Path]


def make_dataset(
    *,
    rows: int = 32,
    cols: int = 24,
    modality: str = "CR",
    sop_class: str = CR_STORAGE,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    pixels: np.ndarray | None = None,
    with_pixels: bool = True,
    **attrs: Any,
) -> Dataset:
    """A small, valid single-frame 12-bit MONOCHROME2 image dataset (override anything)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName = "TEST^SECRET"
    ds.PatientID = "PID-1"
    ds.Modality = modality
    ds.StudyDate = "20260101"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if with_pixels:
        if pixels is None:
            rng = np.random.default_rng(0)
            pixels = rng.integers(0, 4096, size=(rows, cols), dtype=np.uint16)
        ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


@pytest.fixture
def write_dicom(tmp_path: Path) -> WriteDicom:
    """``write_dicom(relative_path, **make_dataset_kwargs) -> Path`` under ``tmp_path``."""

    def _write(relative: str | Path = "image.dcm", **kwargs: Any) -> Path:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        make_dataset(**kwargs).save_as(path, enforce_file_format=True)
        return path

    return _write


@pytest.fixture
def dataset_factory() -> Callable[..., Dataset]:
    """:func:`make_dataset` itself, for tests that change a dataset before writing it."""
    return make_dataset
