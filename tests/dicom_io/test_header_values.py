"""HeaderValues: the index's values straight from raw elements equal pydicom's conversion.

The reference is what the index did before (``Dataset.get`` then ``str(value).strip()``,
``int(value)``, the upper-case tuple of a multi-valued string), applied to a second dataset
built or read the same way, so a cached conversion of one cannot hide a difference.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from dicom_io.header_values import HeaderValues, header_tags
from dicom_io.index import HEADER_KEYWORDS, HEADER_TAGS


def _ref_text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _ref_values(ds: Dataset, keyword: str) -> tuple[str, ...]:
    value = ds.get(keyword)
    if value is None or value == "":
        return ()
    values = [value] if isinstance(value, str) else list(value)
    return tuple(str(v).strip().upper() for v in values)


def _ref_int(ds: Dataset, keyword: str, default: int | None) -> int | None:
    value = ds.get(keyword)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _outcome(call: Callable[[], Any]) -> Any:
    """A call's result, or the type of what it raised (so both sides may fail alike)."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - compared, not hidden
        return type(exc)


def _compare(make: Callable[[], Dataset], keywords: tuple[str, ...]) -> None:
    """Every accessor on every keyword, fast path against the reference (on two datasets
    made alike, so that a conversion cached in one cannot hide a difference)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got, ref = HeaderValues(make()), make()
        for keyword in keywords:
            assert _outcome(lambda: got.text(keyword)) == _outcome(lambda: _ref_text(ref, keyword)), keyword
            assert _outcome(lambda: got.values(keyword)) == _outcome(lambda: _ref_values(ref, keyword)), keyword
            for default in (None, 7):
                assert _outcome(lambda: got.integer(keyword, default)) == \
                    _outcome(lambda: _ref_int(ref, keyword, default)), (keyword, default)


def _raw(keyword: str, vr: str | None, value: bytes, *, charset: bytes | None = None,
         little: bool = True) -> Callable[[], Dataset]:
    """A dataset holding one raw element as ``dcmread`` leaves it (``vr`` ``None``: implicit VR)."""
    def make() -> Dataset:
        elements: dict[Any, Any] = {}
        if charset is not None:
            tag = Tag("SpecificCharacterSet")
            elements[tag] = RawDataElement(tag, "CS", len(charset), charset, 0, vr is None, little)
        tag = Tag(keyword)
        elements[tag] = RawDataElement(tag, vr, len(value), value, 0, vr is None, little)
        return Dataset(elements)
    return make


ODD_VALUES = [
    # (keyword, VR as read, raw bytes, character set)
    ("PatientID", "LO", b"AB\\CD", None),  # two values
    ("PatientID", "LO", b" padded  \x00", None),
    ("PatientID", "LO", b"\t", None),
    ("PatientID", "LO", b"", None),
    ("PatientID", "LO", b"M\xfcller", b"ISO_IR 100"),  # Latin-1
    ("PatientID", "LO", b"M\xc3\xbcller", b"ISO_IR 192"),  # UTF-8
    ("PatientID", "LO", b"\x1b$B;3ED\x1b(B", b"\\ISO 2022 IR 87"),  # JIS with escapes
    ("PatientID", "LO", b"\xcf\xd0", b"GB18030"),
    ("Manufacturer", "LO", b"Acme\\Corp ", None),
    ("Modality", "CS", b"CR ", None),
    ("Modality", "CS", b"cr\x00", None),
    ("Modality", "CS", b"  ", None),
    ("Modality", "UN", b"CR", None),  # read as UN
    ("Modality", "LO", b"DX", None),  # not the dictionary's VR
    ("Modality", None, b"DX", None),  # implicit VR
    ("ImageType", "CS", b"ORIGINAL\\PRIMARY\\ ", None),
    ("ImageType", "CS", b"derived \\ secondary", None),
    ("ImageType", "CS", b"\\", None),
    ("ImageType", "CS", b"ORIGINAL", None),
    ("ImageType", "CS", b"ORIGINAL\\\xe9", None),
    ("ImageType", None, b"ORIGINAL\\PRIMARY", None),
    ("StudyDate", "DA", b"20250101", None),
    ("StudyTime", "TM", b"101010.5 ", None),
    ("PatientAge", "AS", b"034Y", None),
    ("SOPInstanceUID", "UI", b"1.2.3.4\x00", None),
    ("SOPInstanceUID", "UI", b"1.2.3\\1.2.4", None),
    ("SeriesNumber", "IS", b" 12 ", None),
    ("SeriesNumber", "IS", b"007", None),
    ("SeriesNumber", "IS", b"+5", None),
    ("SeriesNumber", "IS", b"-3", None),
    ("SeriesNumber", "IS", b"1.0 ", None),
    ("SeriesNumber", "IS", b"1.5", None),
    ("SeriesNumber", "IS", b"abc", None),
    ("SeriesNumber", "IS", b"1\\2", None),
    ("SeriesNumber", "IS", b"  ", None),
    ("SeriesNumber", "IS", b"\t", None),
    ("SeriesNumber", "IS", b"", None),
    ("SeriesNumber", None, b"4 ", None),
    ("SeriesNumber", "LO", b"4", None),
    ("Rows", "US", b"\x00\x02", None),
    ("Rows", "US", b"\x00\x02\x00\x03", None),  # two values
    ("Rows", "US", b"", None),
    ("Rows", "US", b"\x01", None),  # too short
    ("Rows", None, b"\x10\x00", None),
    ("Rows", "SS", b"\x10\x00", None),
    ("Rows", "UN", b"\x10\x00", None),
]


@pytest.mark.parametrize(("keyword", "vr", "value", "charset"), ODD_VALUES,
                         ids=[f"{k}-{vr}-{v!r}" for k, vr, v, _ in ODD_VALUES])
def test_odd_values_equal_pydicoms_conversion(keyword: str, vr: str | None, value: bytes,
                                              charset: bytes | None) -> None:
    _compare(_raw(keyword, vr, value, charset=charset), (keyword,))


@pytest.mark.parametrize("little", [True, False], ids=["little-endian", "big-endian"])
def test_unsigned_shorts_follow_the_byte_order(little: bool) -> None:
    value = (513).to_bytes(2, "little" if little else "big")
    assert HeaderValues(_raw("Rows", "US", value, little=little)()).integer("Rows") == 513
    _compare(_raw("Rows", "US", value, little=little), ("Rows",))


def test_absent_elements_give_the_defaults() -> None:
    values = HeaderValues(Dataset())
    assert (values.text("Modality"), values.values("ImageType"), values.integer("Rows", 3)) == ("", (), 3)


def _testdata() -> list[Path]:
    """Every file of pydicom's test data folder and of pydicom-data's (installed, never fetched)."""
    folders = {Path(found).parent for found in (get_testdata_file(name) for name in ("CT_small.dcm", "RG3_UNCR.dcm"))
               if found is not None}
    return sorted(path for folder in folders for path in folder.rglob("*") if path.is_file())


def test_every_pydicom_test_file_reads_the_same() -> None:
    """All of pydicom's (and pydicom-data's) files, read as the index reads them."""
    compared = 0
    for name in _testdata():
        def make(name: Path = name) -> Dataset:
            return dcmread(name, stop_before_pixels=True, force=True, specific_tags=HEADER_TAGS)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                make()
        except Exception:  # noqa: BLE001 - files meant to fail (the index reports them)
            continue
        _compare(make, HEADER_KEYWORDS)
        compared += 1
    assert compared >= 150, compared  # pydicom alone ships about 190 readable files


def test_header_tags_refuse_an_unknown_keyword() -> None:
    assert header_tags(("Rows",)) == [Tag("Rows")]
    with pytest.raises(ValueError, match="'Rowz' is not a DICOM keyword pydicom knows"):
        header_tags(("Rowz",))


def test_the_sample_archive_reads_the_same() -> None:
    root = Path(__file__).resolve().parents[2] / "sample_data" / "archive"
    files = sorted(root.rglob("*.dcm"))[:10]
    assert files
    for path in files:
        _compare(lambda path=path: dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS),
                 HEADER_KEYWORDS)
