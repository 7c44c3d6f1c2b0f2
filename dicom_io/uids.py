"""DICOM unique identifiers as untrusted input: the UI grammar, and names safe as paths.

Every UID read from a file is untrusted. A UID is digits in components separated by ``.``,
no component with a leading zero (except ``0`` itself), at most 64 characters (PS3.5 9.1).
``../../X``, an absolute path, a NUL or a 65-character string is not a UID: a study carrying
one is refused (``invalid-uid``) before any path is built from it, so nothing the job writes
can land outside its output folder.
"""

from __future__ import annotations

import re

MAX_UID_LENGTH = 64
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")


def is_valid_uid(value: object) -> bool:
    """True when ``value`` is a string in the DICOM UI grammar (and so safe as a file name)."""
    return (isinstance(value, str) and 0 < len(value) <= MAX_UID_LENGTH
            and _UID.fullmatch(value) is not None)
