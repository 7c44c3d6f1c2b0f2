"""Deflated Explicit VR Little Endian files, read with bounded memory.

pydicom inflates a deflated file's whole dataset in one ``zlib.decompress`` call, so a
400 KB file can take 400 MiB or more before a single header value is known. Here the
dataset is inflated in chunks, on demand, as pydicom's own element parser reads it:

- the header (everything before Pixel Data) may inflate to at most ``max_header_bytes``;
  elements that are not wanted are inflated and thrown away, never kept;
- the Pixel Data element is inflated only when asked for, and then only the bytes the header
  declares (Rows x Columns x Frames x Samples x Bits Allocated); trailing padding in the
  element is allowed but never inflated, and an element more than twice that size is refused
  (:func:`check_native_length`);
- nothing after Pixel Data is ever inflated.

Reason codes used here (the ``reason`` of the raised error):

- ``header-too-large`` (:class:`DicomReadError`): the elements before Pixel Data inflate to
  more than ``max_header_bytes``.
- ``pixel-length-mismatch`` (:class:`PixelDecodeError`): the Pixel Data element holds more
  than twice the bytes Rows x Columns x Frames x Samples x Bits Allocated need.
- ``truncated-pixel-data`` (:class:`PixelDecodeError`): the deflated stream ends inside the
  Pixel Data.
- ``decode-failed`` (:class:`PixelDecodeError`): the stream is corrupt inside the Pixel Data,
  or the Pixel Data is encapsulated (not allowed in this transfer syntax).

A stream that is corrupt before the Pixel Data makes the header unreadable: callers report
``unreadable-header`` as for any header pydicom cannot parse.
"""

from __future__ import annotations

import io
import os
import zlib
from typing import BinaryIO, Literal, NamedTuple, Sequence, cast

import pydicom
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import read_dataset, read_preamble
from pydicom.tag import BaseTag, Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicom_io.errors import DicomReadError, PixelDecodeError
from dicom_io.pixel_header import check_declared, declared_bytes, float_pixel_data_error, image_pixel_module

__all__ = [
    "DECODE_KEEP",
    "DEFAULT_MAX_HEADER_BYTES",
    "InflatingReader",
    "PixelElement",
    "check_native_length",
    "needed_length",
    "deflated_file_meta",
    "read_deflated_dataset",
    "read_deflated_header",
    "read_header",
    "read_pixel_element",
    "read_pixel_value",
]

#: Default limit on the inflated bytes before Pixel Data. Radiograph headers are kilobytes
#: (a few hundred KB with vendor private data or overlays); 16 MiB refuses only absurd ones.
DEFAULT_MAX_HEADER_BYTES = 16 * 2**20
#: Compressed bytes read from the file, and most inflated bytes produced, per step.
INFLATE_CHUNK = 256 * 2**10
#: Inflated bytes kept behind a forward skip, for pydicom's short look-backs (<= 12 bytes).
_HISTORY = 64 * 2**10
_PIXEL_TAGS = frozenset({Tag(0x7FE0, 0x0010), Tag(0x7FE0, 0x0008), Tag(0x7FE0, 0x0009)})
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"})
UNDEFINED_LENGTH = 0xFFFFFFFF
#: What the decode pipeline reads of a deflated file's header; the other elements are inflated
#: and dropped. Group 0028 (Image Pixel, palettes, Modality and VOI LUTs, ICC profile), group
#: 2050 (presentation LUT), the extended offset table, and the UIDs and spacing a
#: ``Radiograph`` carries. (tests/dicom_io/test_bounded_memory.py decodes every native real
#: test file both ways, so an element the pipeline starts to read and this lacks shows there.)
DECODE_KEEP: tuple[int, ...] = tuple(sorted(
    {tag for tag in DicomDictionary if tag >> 16 in (0x0028, 0x2050)}
    | {Tag(keyword) for keyword in (
        "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID",
        "SeriesInstanceUID", "Modality", "ImagerPixelSpacing",
        "EstimatedRadiographicMagnificationFactor", "ExtendedOffsetTable",
        "ExtendedOffsetTableLengths",
    )}
))


class InflatingReader:
    """A read-only, forward file object over a raw deflate stream, inflated on demand.

    Reads keep their bytes (pydicom may seek back inside an element it is parsing); a forward
    seek past what is inflated (pydicom skipping an unwanted element) inflates and drops the
    skipped bytes, keeping only the last 64 KiB. ``limit`` caps the inflated offset: needing a
    byte beyond it raises ``header-too-large``. Raise ``limit`` to read on (the pixel data).
    """

    def __init__(self, raw: BinaryIO, *, limit: int, name: str = "") -> None:
        self._raw = raw
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buffer = bytearray()
        self._base = 0  # inflated offset of self._buffer[0]
        self._pos = 0
        self.limit = limit
        self.name = name

    @property
    def inflated(self) -> int:
        """Bytes inflated so far (kept or dropped)."""
        return self._base + len(self._buffer)

    def _inflate_more(self) -> bool:
        """Inflate one more step into the buffer; ``False`` at the end of the stream."""
        while not self._inflater.eof:
            room = self.limit - self.inflated
            if room <= 0:
                raise DicomReadError(
                    f"the deflated dataset inflates to more than {self.limit:,} bytes before its "
                    "Pixel Data (a deflate bomb, or a header far larger than any radiograph's); "
                    "raise max_header_bytes if such headers are expected",
                    reason="header-too-large",
                )
            data = self._inflater.unconsumed_tail or self._raw.read(INFLATE_CHUNK)
            if not data:
                return False  # the file ends inside the deflate stream
            out = self._inflater.decompress(data, min(room, INFLATE_CHUNK))
            if out:
                self._buffer += out
                return True
        return False

    def _forget_before(self, offset: int) -> None:
        cut = min(offset - _HISTORY - self._base, len(self._buffer))
        if cut > 0:
            del self._buffer[:cut]
            self._base += cut

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            while self._inflate_more():
                pass
            size = self.inflated - self._pos
        while self.inflated < self._pos + size and self._inflate_more():
            pass
        start = self._pos - self._base
        data = bytes(self._buffer[start:start + size])
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset + (self._pos if whence == 1 else 0)
        if whence not in (0, 1) or target < self._base:
            raise OSError(f"cannot seek to {target} (whence={whence}) in a deflated stream")
        while self.inflated < target:
            self._forget_before(self.inflated)
            if not self._inflate_more():
                break
        self._pos = target
        return target

    def tell(self) -> int:
        return self._pos

    def read_value(self, size: int) -> bytes:
        """The next ``size`` bytes (fewer at the end), dropping them from the buffer as they
        are copied out, so a large value is held once (``BytesIO.getvalue`` does not copy)."""
        out = io.BytesIO()
        while out.tell() < size:
            self._forget_before(self._pos + _HISTORY)  # nothing before the position is kept
            if self.inflated <= self._pos and not self._inflate_more():
                break
            start = self._pos - self._base
            take = min(size - out.tell(), self.inflated - self._pos)
            out.write(self._buffer[start:start + take])
            self._pos += take
        return out.getvalue()


def deflated_file_meta(handle: BinaryIO) -> tuple[bytes, FileMetaDataset] | None:
    """Preamble and file meta of a Part 10 file in the deflated transfer syntax, else ``None``.

    On ``(preamble, meta)`` the handle is left at the start of the deflated dataset; on
    ``None`` its position is undefined (the caller reads the file its usual way).
    """
    preamble = read_preamble(handle, force=True)
    if preamble is None:
        return None
    meta = read_dataset(
        handle, is_implicit_VR=False, is_little_endian=True,
        stop_when=lambda tag, vr, length: tag >> 16 != 2,
    )
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return None
    return preamble, FileMetaDataset(meta)


def read_deflated_header(
    handle: BinaryIO,
    meta: FileMetaDataset,
    *,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    specific_tags: Sequence[int | str] | None = None,
    name: str = "",
) -> tuple[Dataset, InflatingReader]:
    """Inflate and parse the dataset up to (not into) its Pixel Data.

    Args:
        handle: positioned at the deflated dataset (see :func:`deflated_file_meta`).
        meta: the file meta, attached to the dataset returned.
        max_header_bytes: most bytes to inflate before the Pixel Data tag.
        specific_tags: keep only these elements (keywords or tags); the rest are skipped
            without being kept.
        name: the file's name, for pydicom's messages.

    Returns:
        The dataset (no Pixel Data) and the reader, positioned at the Pixel Data tag when
        there is one (see :func:`read_pixel_element`).

    Raises:
        DicomReadError: ``header-too-large``.
    """
    stream = InflatingReader(handle, limit=max_header_bytes, name=name)
    tags: list[BaseTag | int] | None = None if specific_tags is None else [Tag(t) for t in specific_tags]
    ds = read_dataset(
        cast(BinaryIO, stream),  # it reads, seeks and tells like a binary file
        is_implicit_VR=False,
        is_little_endian=True,
        stop_when=_at_pixel_data,
        specific_tags=tags,
    )
    ds.file_meta = meta
    return ds, stream


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag in _PIXEL_TAGS


class PixelElement(NamedTuple):
    """The header of a Pixel Data (or Float / Double Float Pixel Data) element."""

    tag: BaseTag
    vr: str  # "" in implicit VR
    length: int  # UNDEFINED_LENGTH for encapsulated data
    value_start: int  # stream offset of the value


def read_pixel_element(
    stream: BinaryIO | InflatingReader, *, implicit: bool = False, little: bool = True
) -> PixelElement | None:
    """Read the Pixel Data element header at the stream's position (``None``: no pixel data).

    Used where the reader stopped before Pixel Data (``stop_before_pixels``); leaves the
    stream at the element's value.
    """
    start = stream.tell()
    header = stream.read(12)
    if len(header) < 8:
        return None
    order: Literal["little", "big"] = "little" if little else "big"
    tag = Tag(int.from_bytes(header[0:2], order), int.from_bytes(header[2:4], order))
    if tag not in _PIXEL_TAGS:
        return None
    vr = header[4:6]
    if implicit or not vr.isalpha():  # some writers put implicit elements in explicit files
        found = PixelElement(tag, "", int.from_bytes(header[4:8], order), start + 8)
    elif vr in _LONG_VRS:  # a header cut short reads as a length past the end: truncated
        found = PixelElement(tag, vr.decode("ascii"), int.from_bytes(header[8:12], order), start + 12)
    else:
        found = PixelElement(tag, vr.decode("ascii"), int.from_bytes(header[6:8], order), start + 8)
    stream.seek(found.value_start)
    return found


def needed_length(length: int, expected: int) -> int:
    """Bytes of a native Pixel Data element to read: what the header needs (to an even count),
    or the whole element when it is shorter (YBR_FULL_422 holds 2/3; a short one is damaged
    and the decoder says so)."""
    return min(length, expected + expected % 2)


def check_native_length(length: int, expected: int) -> None:
    """Refuse native pixel data far longer than the header needs.

    Writers do pad Pixel Data (pydicom's ``MR_small_padded.dcm`` holds 128 bytes more than its
    8,192), so an element up to twice the needed size passes, and only the needed bytes are
    ever read (:func:`needed_length`). More is not padding but a header that lies about the
    data, or a deflate bomb.

    Raises:
        PixelDecodeError: ``pixel-length-mismatch``; ``decode-failed`` for undefined length
            (encapsulated pixel data is not allowed in a deflated file).
    """
    if length == UNDEFINED_LENGTH:
        raise PixelDecodeError(
            "a deflated file with encapsulated (undefined length) Pixel Data, which PS3.5 A.5 "
            "does not allow; re-export the image uncompressed or with a compressed syntax",
            reason="decode-failed",
        )
    if length > 2 * (expected + expected % 2):
        raise PixelDecodeError(
            f"Pixel Data holds {length:,} bytes but Rows x Columns x Frames x Samples x Bits "
            f"Allocated need {expected:,} (more than twice that is not padding): the file is "
            "damaged or hostile; re-export it",
            reason="pixel-length-mismatch",
        )


def read_pixel_value(stream: InflatingReader, element: PixelElement, size: int, ds: Dataset) -> None:
    """Inflate the first ``size`` bytes of the element's value (see :func:`needed_length`)
    into ``ds``; the rest of the stream is never inflated.

    Raises:
        PixelDecodeError: ``truncated-pixel-data`` when the stream ends first,
            ``decode-failed`` when it is corrupt.
    """
    stream.limit = stream.tell() + size
    try:
        value = stream.read_value(size)
    except zlib.error as exc:
        raise PixelDecodeError(
            f"the deflated stream is corrupt inside its Pixel Data: {exc}", reason="decode-failed"
        ) from exc
    if len(value) < size:
        raise PixelDecodeError(
            f"the deflated stream ends after {len(value):,} of the {size:,} bytes of its Pixel Data",
            reason="truncated-pixel-data",
        )
    ds[element.tag] = DataElement(element.tag, element.vr, value)


def read_deflated_dataset(
    handle: BinaryIO,
    meta: FileMetaDataset,
    *,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    max_pixel_bytes: int,
    name: str = "",
) -> Dataset:
    """A deflated file's :data:`DECODE_KEEP` elements and its Pixel Data, inflated in order:
    the header (at most ``max_header_bytes``), the size checks, then only the Pixel Data bytes
    the header declares (no padding, nothing after it).

    Raises:
        DicomReadError: ``header-too-large``.
        SizeLimitError: ``too-large``: the header declares more than ``max_pixel_bytes``.
        PixelDecodeError: ``pixel-length-mismatch``, ``truncated-pixel-data``,
            ``unsupported-pixel-data`` (float pixel data), ``bad-pixel-header`` or
            ``decode-failed``; a dataset without Pixel Data is returned as it is.
    """
    ds, stream = read_deflated_header(
        handle, meta, max_header_bytes=max_header_bytes, specific_tags=DECODE_KEEP, name=name
    )
    element = read_pixel_element(stream)
    if element is None:
        return ds  # the pipeline reports no-pixel-data
    if element.tag != Tag("PixelData"):
        raise float_pixel_data_error()
    h = image_pixel_module(ds)
    check_declared(h, max_pixel_bytes)
    check_native_length(element.length, declared_bytes(h))
    read_pixel_value(stream, element, needed_length(element.length, declared_bytes(h)), ds)
    return ds


def read_header(
    path: str | os.PathLike[str],
    *,
    specific_tags: Sequence[int | str] | None = None,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
) -> FileDataset:
    """``pydicom.dcmread(path, stop_before_pixels=True, specific_tags=...)``, except that a
    deflated file is inflated only up to its Pixel Data and at most ``max_header_bytes``
    (pydicom inflates the whole file, trailing elements included, before it stops).

    For code that reads the headers of archive files (SR sources, sending).

    Raises:
        DicomReadError: ``header-too-large``; anything ``pydicom.dcmread`` raises.
    """
    with open(path, "rb") as handle:
        deflated = deflated_file_meta(handle)
        if deflated is not None:
            preamble, meta = deflated
            ds, _ = read_deflated_header(
                handle, meta, max_header_bytes=max_header_bytes, specific_tags=specific_tags, name=str(path)
            )
            header = FileDataset(str(path), ds, preamble, meta, is_implicit_VR=False, is_little_endian=True)
            header.set_original_encoding(False, True, ds.original_character_set)
            return header
    tags = None if specific_tags is None else [Tag(t) for t in specific_tags]
    return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
