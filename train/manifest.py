"""``DATA/manifest.json``: what a prepared data set was made from, so a run can say what it learned.

Layout (``format_version`` 1)::

    {"format_version": 1, "archive": ..., "labels_csv": ..., "labels_sha256": ..., "seed": ...,
     "split_fractions": {"val": 0.15, "test": 0.15},
     "splits": {"train": {"patients": n, "studies": n, "images": n, "positives": n}, ...},
     "images": [{"sop_instance_uid", "study_instance_uid", "split", "source_path",
                 "source_sha256", "png_sha256"}, ...],
     "skipped": [{"source_path", "sop_instance_uid", "reason", "message"}, ...],
     "created_by": "fracture-screen 0.1.0", "created_at": ...}

``positives`` counts images labelled fracture. Hashes are SHA-256 of the source DICOM file's
bytes and of the PNG written, so the same archive and labels prepare to the same hashes, and a
changed file shows. :func:`data_fingerprint` condenses the image hashes into one id a training
run can record.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from dicom_io.atomic import atomic_write_text
from train.errors import TrainError

__all__ = [
    "MANIFEST_NAME", "FORMAT_VERSION", "ManifestError", "created_by", "data_fingerprint",
    "read_manifest", "sha256_bytes", "sha256_file", "write_manifest",
]

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


class ManifestError(TrainError, ValueError):
    """A prepared data folder has no readable manifest, or one this version cannot read."""


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def created_by() -> str:
    """``fracture-screen <version>`` of the code writing the manifest."""
    from importlib import metadata

    try:
        version = metadata.version("fracture-screen")
    except metadata.PackageNotFoundError:
        version = "0.1.0"
    return f"fracture-screen {version}"


def write_manifest(data_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` as sorted, indented JSON atomically into ``data_dir``."""
    path = Path(data_dir) / MANIFEST_NAME
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    """The manifest of a prepared data folder.

    Raises:
        ManifestError: no manifest (not a folder written by ``screen prepare``), not JSON, or a
            newer format version.
    """
    path = Path(data_dir) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(
            f"{str(path)!r} not found: {str(data_dir)!r} is not a data folder written by "
            "`screen prepare ARCHIVE --labels labels.csv --out DATA`"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"cannot read {str(path)!r}: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{str(path)!r} must hold a JSON object")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise ManifestError(
            f"{str(path)!r} has format_version {version!r}; this fracture-screen reads "
            f"1..{FORMAT_VERSION} (re-run screen prepare, or upgrade fracture-screen)"
        )
    return data


def data_fingerprint(manifest: dict[str, Any], split: str | None = None) -> str:
    """16 hex digits identifying the images (and their splits) a manifest describes.

    Args:
        manifest: a manifest as read by :func:`read_manifest`.
        split: only this split's images; ``None`` for all.
    """
    digest = hashlib.sha256()
    images = manifest.get("images", [])
    for item in sorted(images, key=lambda i: (str(i.get("split")), str(i.get("sop_instance_uid")))):
        if split is not None and item.get("split") != split:
            continue
        digest.update(f"{item.get('split')}|{item.get('sop_instance_uid')}|{item.get('png_sha256')}\n".encode())
    return digest.hexdigest()[:16]
