"""One night over 200 corrupted copies of the sample radiographs: the run never raises, writes
nothing outside ``--out``, and every study it can name gets exactly one row.

Each copy gets fresh Study/Series/SOP Instance UIDs, then one of: a truncation anywhere, flipped
bytes in the header, an element length that lies, a VR that lies, or nothing (a control). The
corruption and its place are drawn from a seeded generator, so a failure reproduces.
"""

from __future__ import annotations

import csv
import io
import struct
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.uid import generate_uid

from screen.cli import cli

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "archive"
COPIES = 200
KINDS = ("truncate", "flip-header", "lying-length", "lying-vr", "none")
VRS = (b"OB", b"SQ", b"UN", b"DA", b"US", b"FD", b"UI", b"LO")


def _fresh(path: Path) -> bytes:
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _element_offsets(data: bytes) -> list[int]:
    """Offsets of explicit-VR element headers after the file meta (group 0008 onwards)."""
    offsets = []
    for index in range(132, min(len(data) - 8, 6000)):
        group = struct.unpack_from("<H", data, index)[0]
        if group in (0x0008, 0x0010, 0x0018, 0x0020, 0x0028) and data[index + 4:index + 6].isalpha():
            offsets.append(index)
    return offsets


def corrupt(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    body = bytearray(data)
    if kind == "truncate":
        return bytes(body[: int(rng.integers(0, len(body)))])
    if kind == "flip-header":
        for _ in range(int(rng.integers(1, 12))):
            body[int(rng.integers(128, min(len(body), 3000)))] ^= int(rng.integers(1, 256))
        return bytes(body)
    offsets = _element_offsets(data)
    if not offsets:
        return bytes(body)
    at = offsets[int(rng.integers(0, len(offsets)))]
    if kind == "lying-length":
        if body[at + 4:at + 6] in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC"):
            struct.pack_into("<I", body, at + 8, int(rng.integers(0, 2**32)))
        else:
            struct.pack_into("<H", body, at + 6, int(rng.integers(0, 2**16)))
    elif kind == "lying-vr":
        body[at + 4:at + 6] = VRS[int(rng.integers(0, len(VRS)))]
    return bytes(body)


@pytest.fixture(scope="module")
def hostile_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Counter[str]]:
    root = tmp_path_factory.mktemp("hostile") / "export"
    sources = sorted(SAMPLE.rglob("*.dcm"))
    rng = np.random.default_rng(20261206)
    kinds: Counter[str] = Counter()
    for index in range(COPIES):
        kind = KINDS[index % len(KINDS)]
        data = corrupt(_fresh(sources[index % len(sources)]), kind, rng)
        folder = root / f"case{index:03d}"
        folder.mkdir(parents=True)
        (folder / "image.dcm").write_bytes(data)
        kinds[kind] += 1
    return root, kinds


def test_a_night_of_corrupted_files_never_raises(hostile_archive: tuple[Path, Counter[str]],
                                                 site_writer: Callable[..., Path], tiny_models: Path,
                                                 tmp_path: Path) -> None:
    archive, kinds = hostile_archive
    site = site_writer(tmp_path / "site", tiny_models, extra="[scope]\nbody_parts = []\nrequire_body_part = false\n")
    out = tmp_path / "out"
    before = {p for p in tmp_path.parent.rglob("*") if p.is_file() and not p.is_relative_to(tmp_path)}
    result = CliRunner().invoke(cli, ["run", str(archive), "--config", str(site), "--out", str(out),
                                      "--workers", "2"])
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    after = {p for p in tmp_path.parent.rglob("*") if p.is_file() and not p.is_relative_to(tmp_path)}
    assert after == before  # nothing written outside --out (nor anywhere else in the test tree)
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))
    with open(out / "scan.csv", newline="", encoding="utf-8") as handle:
        scanned = list(csv.DictReader(handle))
    assert len(scanned) == COPIES  # one row per file
    with open(out / "studies.csv", newline="", encoding="utf-8") as handle:
        studies = [row["study_instance_uid"] for row in csv.DictReader(handle)]
    assert len(studies) == len(set(studies))  # exactly once each
    named = {row["study_instance_uid"] for row in scanned if row["study_instance_uid"]}
    assert named == set(studies)  # every study a file names has its row
    statuses = Counter(row["status"] for row in csv.DictReader(open(out / "studies.csv", encoding="utf-8")))
    assert statuses["screened"] >= kinds["none"]  # the untouched copies are screened
    assert set(statuses) <= {"screened", "failed", "skipped", "out-of-scope"}
