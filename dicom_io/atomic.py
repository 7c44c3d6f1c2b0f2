"""Atomic file writes: a temporary file in the target's folder, fsync, then ``os.replace``.

A reader (or a rerun after ``kill -9``) sees either the old file or the whole new one, never
a partial file. Temporary names start with ``.`` and end with ``.tmp`` so they are easy to
recognise and clean.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None) -> Iterator[IO]:  # type: ignore[type-arg]
    """Open a temporary file that replaces ``path`` when the block exits without error."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding, newline=None if binary else newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # what a plain open would give (mkstemp makes 0600)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    current = os.umask(0o077)
    os.umask(current)
    return current


@contextlib.contextmanager
def file_mode(mode: int) -> Iterator[None]:
    """Create files with ``mode`` (e.g. ``0o640``) and folders with the matching search bits
    (``0o750``) inside the block, through the umask; the previous umask comes back after."""
    folder_mode = mode | ((mode & 0o444) >> 2)
    previous = os.umask(0o777 & ~folder_mode)
    try:
        yield
    finally:
        os.umask(previous)
