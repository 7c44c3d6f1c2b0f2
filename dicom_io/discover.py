"""Discover: walk an exported archive and decide, by content, which files are DICOM.

Every path met during the walk becomes a :class:`FoundFile` (a DICOM candidate) or a
:class:`Rejected` record with a reason code, so that ``scan.csv`` can give every file an
outcome. Nothing here parses more than the first 132 bytes of a file.

Reason codes produced here:
    ``empty-file``                 zero bytes (failed: a broken transfer, usually)
    ``not-dicom``                  content is not DICOM; *failed* when the file claims to be
                                   DICOM (``.dcm``/``.dicom``/``.dic`` name, or listed in a
                                   DICOMDIR), otherwise *skipped*
    ``unreadable``                 the file cannot be opened or read (permissions, I/O error)
    ``dicomdir``                   a DICOMDIR media directory (skipped: its records are used
                                   to check the referenced files exist)
    ``missing-referenced-file``    a DICOMDIR lists a file that is not there (failed)
    ``symlink-loop``               a directory link that leads back into the walk (skipped)
    ``duplicate-file``             a second path (link) to a file already found (skipped)
    ``not-a-regular-file``         sockets, FIFOs, devices (skipped; never opened)
    ``broken-link``                a symbolic link whose target does not exist (failed)
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

#: VR codes that may follow a tag in explicit-VR little endian encoding.
_VALID_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL "
    b"UN UR US UT UV".split()
)
#: File names that claim to be DICOM; a non-DICOM file with one of these fails rather than skips.
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
DICOMDIR_NAME = "DICOMDIR"


@dataclass(frozen=True)
class FoundFile:
    """A file whose first bytes look like DICOM.

    Attributes:
        path: path as found in the walk (not resolved, so users recognise it).
        size: bytes on disk.
        has_preamble: ``True`` for Part 10 files (``DICM`` at offset 128); ``False`` for
            headerless files whose transfer syntax must be inferred by the reader.
        in_dicomdir: ``True`` when a DICOMDIR of the archive references this file.
    """

    path: Path
    size: int
    has_preamble: bool
    in_dicomdir: bool = False


@dataclass(frozen=True)
class Rejected:
    """A path the walk met that is not a DICOM candidate, with its outcome and reason."""

    path: Path
    outcome: str  # "skipped" | "failed"
    reason: str
    message: str
    size: int | None = None


@dataclass
class Discovery:
    """Result of :func:`discover`: the DICOM candidates and everything else, in walk order."""

    found: list[FoundFile] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    dicomdirs: list[Path] = field(default_factory=list)


def sniff(head: bytes) -> bool | None:
    """Classify a file from its first 132 bytes.

    Returns:
        ``True`` for a Part 10 file (preamble + ``DICM``), ``False`` for a plausible
        headerless dataset (starts with a group 0002/0008 element in little endian, explicit or
        implicit VR; big endian only with explicit VR), ``None`` when the content is not DICOM.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return None
    for order in ("little", "big"):
        group = int.from_bytes(head[0:2], order)
        element = int.from_bytes(head[2:4], order)
        if group not in (0x0002, 0x0008) or element > 0x0FFF:
            continue
        if head[4:6] in _VALID_VRS:
            return False
        length = int.from_bytes(head[4:8], order)
        if order == "little" and length < 0x10000 and (element != 0 or length == 4):
            return False
    return None


def _claims_dicom(path: Path, referenced: set[str]) -> bool:
    return path.suffix.lower() in DICOM_SUFFIXES or _norm(path) in referenced


def _norm(path: Path) -> str:
    """Case-folded absolute path, since DICOMDIR file IDs come from case-insensitive media."""
    return os.path.normcase(os.path.abspath(path)).lower()


def _dicomdir_references(dicomdir: Path) -> tuple[set[str], str | None]:
    """Absolute, case-folded paths a DICOMDIR references, or an error message."""
    import pydicom  # local: discovery needs pydicom only when a DICOMDIR is present

    try:
        ds = pydicom.dcmread(dicomdir, force=False)
        records = ds.get("DirectoryRecordSequence", [])
    except Exception as exc:  # noqa: BLE001 - any parse failure is reported as a row
        return set(), f"{type(exc).__name__}: {exc}"
    refs: set[str] = set()
    for record in records:
        file_id = record.get("ReferencedFileID")
        if file_id is None:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        refs.add(_norm(dicomdir.parent.joinpath(*parts)))
    return refs, None


_Entry = tuple[Path, os.stat_result]


def _walk(root: Path, visited_dirs: set[tuple[int, int]]) -> Iterator[_Entry | Rejected]:
    """Yield every non-directory entry under ``root`` (depth first, sorted), or why not.

    Directory links are followed once; a directory reached a second time is reported as a
    symlink loop instead of being walked again.
    """
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        yield Rejected(root, "failed", "unreadable", f"cannot list folder: {exc.strerror or exc}")
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            st = entry.stat(follow_symlinks=True)
        except FileNotFoundError:
            yield Rejected(path, "failed", "broken-link", "symbolic link target does not exist")
            continue
        except OSError as exc:
            yield Rejected(path, "failed", "unreadable", f"cannot read: {exc.strerror or exc}")
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in visited_dirs:
                yield Rejected(path, "skipped", "symlink-loop", "directory link leads back into the walk")
                continue
            visited_dirs.add(key)
            yield from _walk(path, visited_dirs)
        else:
            yield path, st


def discover(root: str | os.PathLike[str]) -> Discovery:
    """Walk ``root`` (a folder or a single file) and classify every file by its content.

    DICOMDIR files are read for the files they reference: a referenced file that is missing
    becomes a failed row, and a referenced file whose content is not DICOM fails rather than
    being skipped. Symbolic links are followed, with loops and duplicate targets detected.
    """
    root_path = Path(root)
    result = Discovery()
    st_root = root_path.stat()
    if root_path.is_file():
        entries: list[_Entry | Rejected] = [(root_path, st_root)]
    else:
        entries = list(_walk(root_path, {(st_root.st_dev, st_root.st_ino)}))

    referenced: set[str] = set()
    dicomdir_rows: dict[Path, Rejected] = {}
    for entry in entries:
        if isinstance(entry, Rejected) or entry[0].name.upper() != DICOMDIR_NAME:
            continue
        path, st = entry
        refs, error = _dicomdir_references(path)
        referenced |= refs
        result.dicomdirs.append(path)
        dicomdir_rows[path] = (
            Rejected(path, "failed", "unreadable-header", f"DICOMDIR unreadable: {error}", st.st_size)
            if error is not None
            else Rejected(path, "skipped", "dicomdir", "DICOMDIR media directory", st.st_size)
        )
    seen_files: set[tuple[int, int]] = set()
    present: set[str] = set()
    for entry in entries:
        if isinstance(entry, Rejected):
            present.add(_norm(entry.path))
            result.rejected.append(entry)
            continue
        path, st = entry
        present.add(_norm(path))
        if path in dicomdir_rows:
            result.rejected.append(dicomdir_rows[path])
            continue
        if not stat.S_ISREG(st.st_mode):
            result.rejected.append(Rejected(path, "skipped", "not-a-regular-file", "not a regular file"))
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_files:
            result.rejected.append(
                Rejected(path, "skipped", "duplicate-file", "another path to a file already found", st.st_size)
            )
            continue
        seen_files.add(key)
        row = _classify(path, st.st_size, referenced)
        if isinstance(row, FoundFile):
            result.found.append(row)
        else:
            result.rejected.append(row)
    for missing in sorted(referenced - present):
        result.rejected.append(
            Rejected(
                Path(missing),
                "failed",
                "missing-referenced-file",
                "listed in a DICOMDIR but not present in the archive",
            )
        )
    return result


def _classify(path: Path, size: int, referenced: set[str]) -> FoundFile | Rejected:
    in_dicomdir = _norm(path) in referenced
    if size == 0:
        return Rejected(path, "failed", "empty-file", "file is empty (0 bytes)", 0)
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError as exc:
        return Rejected(path, "failed", "unreadable", f"cannot read: {exc.strerror or exc}", size)
    kind = sniff(head)
    if kind is None:
        outcome = "failed" if _claims_dicom(path, referenced) else "skipped"
        return Rejected(path, outcome, "not-dicom", "content is not DICOM", size)
    return FoundFile(path=path, size=size, has_preamble=kind, in_dicomdir=in_dicomdir)
