"""Header values read straight from pydicom's raw elements, converted only when asked for.

``pydicom.dcmread(..., specific_tags=...)`` keeps each element it reads as a raw element (its
bytes); ``Dataset.get`` converts one on first use through keyword lookup, VR lookup, character
set decoding and value classes, about 15 µs an element, which made converting the index's 35
elements cost more than reading the file. :class:`HeaderValues` gives the index the same
answers for less:

- the common cases are decoded from the raw bytes at once: a value of a string VR (``AS CS
  DA TM SH LO UI``) that is plain ASCII without a backslash or an escape (no character set
  can read those bytes otherwise, and it is a single value), an ``US`` of two bytes, an
  ``IS`` of digits;
- everything else (other bytes, several values, a VR other than the dictionary's, a value read
  as ``UN``, a converted element) goes through pydicom's own conversion, as before.

The results are those of pydicom's conversion followed by the index's cleaning (``str(value)
.strip()``, ``int(value)``); ``tests/dicom_io/test_header_values.py`` holds the two equal over
every file of pydicom's test data and every odd case named here. No DICOM is parsed here:
pydicom reads the file and these are its elements' values.
"""

from __future__ import annotations

from typing import Any

from pydicom import config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

#: String VRs whose single ASCII value pydicom returns as the decoded text less trailing
#: spaces and NULs, whatever the character set (``DA``/``TM`` only while pydicom's
#: ``datetime_conversion`` is off, its default).
_TEXT_VRS = frozenset({"AS", "CS", "DA", "TM", "SH", "LO", "UI"})
_DATETIME_VRS = frozenset({"DA", "TM"})
#: VRs whose integer value is read here: an ``US`` of two bytes, an ``IS`` of digits.
_INT_VRS = frozenset({"US", "IS"})

#: keyword -> (tag, dictionary VR), filled on first use of each keyword.
_TAGS: dict[str, tuple[int, str]] = {}


def header_tags(keywords: tuple[str, ...]) -> list[BaseTag]:
    """The tags of ``keywords``, for ``dcmread(specific_tags=...)`` (converting keywords on
    every read costs about 0.1 ms a file).

    Raises:
        ValueError: a keyword pydicom's dictionary does not know.
    """
    return [BaseTag(_tag(keyword)[0]) for keyword in keywords]


def _tag(keyword: str) -> tuple[int, str]:
    found = _TAGS.get(keyword)
    if found is None:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"{keyword!r} is not a DICOM keyword pydicom knows")
        found = _TAGS[keyword] = (int(tag), dictionary_VR(tag))
    return found


def _ascii(value: bytes) -> str | None:
    """``value`` as text when it is one plain ASCII value (no backslash, no ISO 2022 escape)."""
    if not value.isascii() or b"\\" in value or b"\x1b" in value:
        return None
    return value.decode("ascii")


class HeaderValues:
    """Values of one header, each converted when first asked for (see the module docstring).

    Attributes:
        dataset: the dataset read by pydicom (the slow path, and what else needs it).
    """

    __slots__ = ("dataset", "_elements")

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        # the elements as read (``items()`` converts nothing), by plain int tag for fast lookups
        self._elements = {int(tag): element for tag, element in dataset.items()}

    def _raw(self, keyword: str, vrs: frozenset[str]) -> tuple[tuple[bytes, str, bool] | None, bool]:
        """The keyword's raw value, VR and byte order if it can be decoded here, and whether
        the element is present."""
        tag, expected = _tag(keyword)
        element = self._elements.get(tag)
        if element is None:
            return None, False
        if not isinstance(element, RawDataElement) or not isinstance(element.value, bytes):
            return None, True
        vr = element.VR if element.VR is not None else expected
        if vr != expected or vr not in vrs or (vr in _DATETIME_VRS and config.datetime_conversion):
            return None, True
        return (element.value, vr, bool(element.is_little_endian)), True

    def text(self, keyword: str) -> str:
        """The value as text without surrounding whitespace; ``""`` when absent or empty.

        Equal to ``str(dataset.get(keyword)).strip()`` (or ``""`` for ``None``).
        """
        element, present = self._raw(keyword, _TEXT_VRS)
        if not present:
            return ""
        if element is not None:
            text = _ascii(element[0])
            if text is not None:
                return text.rstrip("\0 ").strip()
        value = self.dataset.get(keyword)
        return "" if value is None else str(value).strip()

    def values(self, keyword: str) -> tuple[str, ...]:
        """A possibly multi-valued string element as an upper-case tuple; ``()`` when absent
        or empty."""
        element, present = self._raw(keyword, _TEXT_VRS)
        if not present:
            return ()
        if element is not None:
            value, vr, _ = element
            if vr == "CS" and value.isascii():
                # pydicom reads CS without a character set: trailing padding off, then split
                items = value.decode("ascii").rstrip(" \0").split("\\")
                if len(items) == 1:
                    return (items[0].strip().upper(),) if items[0] else ()
                return tuple(item.strip().upper() for item in items)
            text = _ascii(value)
            if text is not None:
                text = text.rstrip("\0 ")
                return (text.strip().upper(),) if text else ()
        converted: Any = self.dataset.get(keyword)
        if converted is None or converted == "":
            return ()
        found = [converted] if isinstance(converted, str) else list(converted)
        return tuple(str(v).strip().upper() for v in found)

    def integer(self, keyword: str, default: int | None = None) -> int | None:
        """The value as an ``int``; ``default`` when absent, empty, several or not a number."""
        element, present = self._raw(keyword, _INT_VRS)
        if not present:
            return default
        if element is not None:
            value, vr, little = element
            if not value:
                return default
            if vr == "US":
                if len(value) == 2:
                    return int.from_bytes(value, "little" if little else "big")
            else:
                text = _ascii(value)
                if text is not None:
                    digits = text.rstrip(" \0").strip()
                    if digits.isdigit():
                        return int(digits)
                    if not digits:
                        return default
        converted: Any = self.dataset.get(keyword)
        if converted in (None, ""):
            return default
        try:
            return int(converted)
        except (TypeError, ValueError):
            return default

