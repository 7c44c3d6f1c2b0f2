"""Integration: C-STORE to a real Orthanc (Debian package ``orthanc``) in its own network namespace.

Orthanc listens on every interface, so it runs inside ``unshare --net`` where only a private
loopback exists; the sender runs in the same namespace (``orthanc_roundtrip.py``), which prints
a JSON summary that this test checks: files sent with :func:`dicom_io.send.send_files`, then a
``screen run --send-to`` of one sample study (the demo DETR member alone, every image flagged)
whose SR and GSPS Orthanc must hold and the ledger must record as stored. Skips with the reason
when Orthanc, ``unshare`` or the right to create a network namespace (root / CAP_SYS_ADMIN) is
missing.
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
    GrayscaleSoftcopyPresentationStateStorage,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

REPO = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).with_name("orthanc_roundtrip.py")
ARCHIVE = REPO / "sample_data" / "archive"
#: A one-image sample study, screened by the demo DETR member alone at threshold 0 (so it is
#: flagged and the run writes a GSPS): one light member keeps the test to seconds.
FLAGGED_STUDY = ARCHIVE / "PH1273256" / "20250519_A25058100"


def write_flagging_site(folder: Path) -> Path:
    """A site config and operating point: the demo DETR member, every image positive, its boxes kept."""
    folder.mkdir(parents=True, exist_ok=True)
    op = {"schema_version": 1, "thresholds": {"detr": 0.0}, "vote": {"rule": "any"},
          "boxes": {"score_threshold": 0.0, "iou_threshold": 0.55, "scoring": "max", "skip_box_threshold": 0.0,
                    "members": ["detr"], "weights": None}}
    (folder / "op.json").write_text(json.dumps(op), encoding="utf-8")
    site = folder / "site.toml"
    site.write_text(f'operating_point = "op.json"\n[run]\ndevice = "cpu"\nworkers = 1\n\n[members.detr]\n'
                    f'kind = "detr"\ncheckpoint = "{REPO / "sample_data" / "models" / "detr"}"\n', encoding="utf-8")
    return site


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
    study = tmp_path / "export"
    shutil.copytree(FLAGGED_STUDY, study / FLAGGED_STUDY.name)

    run = subprocess.run(
        ["unshare", "--net", "--", sys.executable, str(HELPER), str(workdir), *map(str, files),
         "--screen", str(study), str(tmp_path / "out"), str(write_flagging_site(tmp_path / "site"))],
        capture_output=True, text=True, timeout=180, cwd=REPO, env=env,
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
    # screen run --send-to: the SR and the GSPS stored in Orthanc, each send in the ledger
    screened = out["screen"]
    kinds = sorted(o["kind"] for o in screened["objects"])
    assert kinds == ["gsps", "sr"], f"the DETR member gave no box on {FLAGGED_STUDY.name}: {screened}"
    assert screened["sent"] == {"sent": 2, "failed": 0} and screened["exit_code"] == 0
    for item in screened["objects"]:
        assert (item["ok"], item["status"]) == (1, 0), item
        stored = screened["read_back"][item["sop_instance_uid"]]
        assert stored["found"] and stored["sop_instance_uid"] == item["sop_instance_uid"]
        expected_class = {"sr": ComprehensiveSRStorage, "gsps": GrayscaleSoftcopyPresentationStateStorage}
        assert stored["sop_class_uid"] == expected_class[item["kind"]]
