"""Integration: C-STORE to a real Orthanc (Debian package ``orthanc``) in its own network namespace.

Orthanc listens on every interface, so it runs inside ``unshare --net`` where only a private
loopback exists; the sender runs in the same namespace (``orthanc_roundtrip.py``), which prints
a JSON summary that this test checks. Skips with the reason when Orthanc, ``unshare`` or the
right to create a network namespace (root / CAP_SYS_ADMIN) is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComprehensiveSRStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

REPO = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).with_name("orthanc_roundtrip.py")
ARCHIVE = REPO / "sample_data" / "archive"


def _why_no_orthanc() -> str:
    """Why the Orthanc test cannot run here, or "" when it can."""
    if shutil.which("Orthanc") is None:
        return "Orthanc is not installed (apt-get install -y orthanc)"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip is missing (apt-get install -y util-linux iproute2)"
    try:
        probe = subprocess.run(
            ["unshare", "--net", "--", "ip", "link", "set", "lo", "up"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace: {exc}"
    if probe.returncode != 0:
        return (
            "cannot create a network namespace (needs root or CAP_SYS_ADMIN): "
            f"{probe.stderr.strip()}"
        )
    return ""


WHY_NOT = _why_no_orthanc()


def write_sr(path: Path) -> Path:
    """A small Comprehensive SR-like dataset as a Part 10 file."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ComprehensiveSRStorage
    ds.SOPClassUID = ComprehensiveSRStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "TEST^ORTHANC", "PID-O", "SR"
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator = "126000", "DCM"
    title.CodeMeaning = "Imaging Measurement Report"
    ds.ConceptNameCodeSequence = [title]
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "runs")
def test_send_to_real_orthanc_and_read_back(tmp_path: Path) -> None:
    by_syntax: dict[str, Path] = {}
    for path in sorted(ARCHIVE.rglob("*.dcm")):
        syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        by_syntax.setdefault(syntax, path)
    if JPEG2000Lossless not in by_syntax or RLELossless not in by_syntax:
        pytest.skip("sample_data/archive lacks a JPEG 2000 or an RLE file")
    files = [write_sr(tmp_path / "sr.dcm"), by_syntax[JPEG2000Lossless], by_syntax[RLELossless]]
    workdir = tmp_path / "orthanc"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}

    run = subprocess.run(
        ["unshare", "--net", "--", sys.executable, str(HELPER), str(workdir), *map(str, files)],
        capture_output=True, text=True, timeout=90, cwd=REPO, env=env,
    )

    log = workdir / "orthanc.log"
    context = f"stderr:\n{run.stderr[-3000:]}\northanc.log:\n" + (
        log.read_text(errors="replace")[-3000:] if log.exists() else "(none)"
    )
    assert run.returncode == 0, context
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["rest_without_auth"] == 401, "REST must require authentication"
    sources = [dcmread(f) for f in files]
    assert [r["ok"] for r in out["results"]] == [True, True, True], context
    assert [(r["status"], r["attempts"]) for r in out["results"]] == [(0, 1)] * 3
    for source, result in zip(sources, out["results"]):
        uid = str(source.SOPInstanceUID)
        assert result["sop_instance_uid"] == uid
        stored = out["read_back"][uid]
        assert stored["found"] and stored["sop_instance_uid"] == uid
        assert stored["sop_class_uid"] == str(source.SOPClassUID)
        assert stored["transfer_syntax"] == str(source.file_meta.TransferSyntaxUID)
        expected_pixels = len(source.PixelData) if "PixelData" in source else None
        assert stored["pixel_data_bytes"] == expected_pixels
    # only the known calling AE title may store, and only to Orthanc's own AE title
    stranger, wrong_called = out["refused"]
    assert not stranger["ok"] and "Calling AE title not recognised" in stranger["error"]
    assert not wrong_called["ok"] and "Called AE title not recognised" in wrong_called["error"]
    assert out["instance_count"] == len(files)
    assert out["killed"] is False
