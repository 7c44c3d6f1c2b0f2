"""The synthetic radiograph phantom: seeded CR/DX DICOM archives with a real visual task.

See ``docs/phantom.md`` for the specification. :func:`generate_image` draws one
radiograph and its truth boxes (useful on its own to feed training without files);
:func:`write_phantom_archive` writes a whole archive and its labels CSV, bit for bit the same
for the same :class:`PhantomConfig`.
"""

from __future__ import annotations

from dicom_io.phantom.archive import LABEL_COLUMNS, PhantomSummary, write_phantom_archive
from dicom_io.phantom.config import COMPRESSION_KINDS, PHANTOM_VERSION, PhantomConfig, PhantomError
from dicom_io.phantom.draw import MAX_VALUE, PhantomImage, generate_image

__all__ = [
    "COMPRESSION_KINDS",
    "LABEL_COLUMNS",
    "MAX_VALUE",
    "PHANTOM_VERSION",
    "PhantomConfig",
    "PhantomError",
    "PhantomImage",
    "PhantomSummary",
    "generate_image",
    "write_phantom_archive",
]
