"""index: header-only reads, truncation found from the Pixel Data element header, grouping."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmwrite
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from dicom_io.discover import discover
from dicom_io.errors import DicomReadError, SizeLimitError
from dicom_io.index import IndexedFileError, group_studies, read_instance


def _found(path: Path):  # type: ignore[no-untyped-def]
    (found,) = discover(path).found
    return found


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian], ids=["implicit-le", "explicit-be"])
def test_truncation_is_detected_in_every_encoding(tmp_path: Path, syntax: str, dataset_factory) -> None:
    ds = dataset_factory(rows=40, cols=40)
    ds.file_meta.TransferSyntaxUID = syntax
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True, little_endian=syntax != ExplicitVRBigEndian,
               implicit_vr=syntax == ImplicitVRLittleEndian)
    inst = read_instance(_found(path))
    assert inst.has_pixel_data and inst.rows == 40 and inst.pixel_bytes == 40 * 40 * 2
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(IndexedFileError) as info:
        read_instance(_found(path))
    assert info.value.reason == "truncated-pixel-data"
    assert isinstance(info.value.cause, DicomReadError)
    assert info.value.instance.sop_instance_uid == ds.SOPInstanceUID  # still counts in its study


def test_headerless_file_is_read(tmp_path: Path, dataset_factory) -> None:
    ds = dataset_factory()
    del ds.file_meta  # no preamble, no file meta: the reader must infer the encoding
    path = tmp_path / "raw"
    dcmwrite(path, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert path.read_bytes()[:2] == b"\x08\x00"
    found = _found(path)
    assert found.has_preamble is False
    inst = read_instance(found)
    assert inst.sop_instance_uid == ds.SOPInstanceUID and inst.has_pixel_data


def test_size_limit_refuses_from_header(write_dicom) -> None:
    path = write_dicom("big.dcm", rows=4, cols=4, Rows=65535, Columns=65535, NumberOfFrames=1000)
    with pytest.raises(IndexedFileError, match="8,589,672,450,000 bytes, above the limit") as info:
        read_instance(_found(path))
    assert isinstance(info.value.cause, SizeLimitError) and info.value.reason == "too-large"


def test_no_pixel_data_and_image_type(write_dicom) -> None:
    inst = read_instance(_found(write_dicom("sr.dcm", with_pixels=False, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])))
    assert inst.has_pixel_data is False
    assert inst.image_type == ("ORIGINAL", "PRIMARY", "LOCALIZER")


def test_grouping_orders_by_instance_number(write_dicom) -> None:
    paths = [
        write_dicom("g/c.dcm", study_uid="1.1", series_uid="1.1.1", InstanceNumber=2),
        write_dicom("g/a.dcm", study_uid="1.1", series_uid="1.1.1", InstanceNumber=1),
        write_dicom("g/b.dcm", study_uid="1.1", series_uid="1.1.2", InstanceNumber=1),
        write_dicom("g/d.dcm", study_uid="2.2", series_uid="2.2.1"),
    ]
    instances = [read_instance(_found(p)) for p in paths]
    studies = group_studies(instances)
    assert list(studies) == ["1.1", "2.2"]
    assert [i.path.name for i in studies["1.1"].series["1.1.1"].instances] == ["a.dcm", "c.dcm"]
    assert [i.path.name for i in studies["1.1"].instances] == ["a.dcm", "c.dcm", "b.dcm"]
