"""Errors raised by :mod:`dicom_io`.

Every error here subclasses :class:`DicomIOError`, itself a :class:`~ensembles.errors.ScreenError`
(the project's one root, imported from a module with no imports); only the CLI turns them into exit codes.
Each carries a short machine-readable ``reason`` code, the same codes that appear in the
``reason`` column of ``scan.csv`` and ``studies.csv``.
"""

from __future__ import annotations

from ensembles.errors import ScreenError


class DicomIOError(ScreenError):
    """Base of every error raised by :mod:`dicom_io`."""

    reason: str = "error"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class DicomReadError(DicomIOError):
    """A file could not be read as DICOM (bad header, truncated, unreadable)."""

    reason = "unreadable"


class PixelDecodeError(DicomIOError):
    """Pixel data could not be decoded into a usable radiograph."""

    reason = "decode-failed"


class SizeLimitError(DicomIOError):
    """The header claims more pixel data than the configured limit allows."""

    reason = "too-large"


class GeometryError(DicomIOError, ValueError):
    """A box or resize specification is out of range."""

    reason = "bad-geometry"


class InvalidArgumentError(DicomIOError, ValueError):
    """A caller passed an invalid option or value (a policy field, a constructor argument).

    A programming or configuration mistake, never a property of a file.
    """

    reason = "invalid-argument"


class SRError(DicomIOError):
    """A DICOM SR could not be built, written or read back (see :mod:`dicom_io.sr`)."""

    reason = "sr-failed"
