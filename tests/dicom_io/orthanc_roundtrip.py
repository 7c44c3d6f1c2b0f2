"""Send files to a real Orthanc and read them back; run INSIDE a fresh network namespace.

Used by ``test_orthanc.py`` as ``unshare --net -- python orthanc_roundtrip.py WORKDIR FILE...
[--screen ARCHIVE OUT CONFIG]``
(not a test module itself: pytest does not collect it). Orthanc cannot bind to 127.0.0.1 only,
so it runs in a network namespace that has nothing but its own loopback; this script brings
``lo`` up, starts Orthanc with a config written into WORKDIR (storage there too, REST with
authentication, only the screener's calling AE title may store), sends FILE... with
:func:`dicom_io.send.send_files`, reads each instance back over the REST API, stops Orthanc
and prints one JSON object on the last line of stdout for the test to check. With ``--screen``, it
then runs ``screen run ARCHIVE --config CONFIG --out OUT --send-to ORTHANC --allow-demo`` and
reads back every object the run's ledger records as sent.

Everything is bounded: Orthanc gets SIGKILL if this script dies (PR_SET_PDEATHSIG), the REST
wait and every request have timeouts, and Orthanc is killed if it has not exited 8 s after
SIGTERM.
"""

from __future__ import annotations

import base64
import ctypes
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pydicom import dcmread

from dicom_io.send import Destination, send_files

ORTHANC_AET = "ORTHANC_FS"
SCREEN_AET = "FRACTURE_SCREEN"
DICOM_PORT, HTTP_PORT = 4242, 8042
USER, PASSWORD = "screen", "not-a-secret-test-only"
REST = f"http://127.0.0.1:{HTTP_PORT}"


def orthanc_config(workdir: Path) -> dict[str, Any]:
    """A locked-down Orthanc: no remote REST, auth on, known calling AE titles only."""
    return {
        "Name": "fracture-screen-test",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "StorageCompression": False,
        "Plugins": [],
        "HttpServerEnabled": True,
        "HttpPort": HTTP_PORT,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "DicomServerEnabled": True,
        "DicomAet": ORTHANC_AET,
        "DicomPort": DICOM_PORT,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomCheckModalityHost": True,
        "DicomModalities": {"screener": [SCREEN_AET, "127.0.0.1", 104]},
        "SaveJobs": False,
        "HttpThreadsCount": 4,
    }


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when this script's process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def rest(path: str, *, data: bytes | None = None, auth: bool = True) -> tuple[int, bytes]:
    """One REST call to Orthanc (status, body); HTTP errors are returned, not raised."""
    request = urllib.request.Request(REST + path, data=data)
    if auth:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), b""


def wait_for_rest(process: subprocess.Popen[bytes], deadline_s: float) -> float:
    """Seconds until Orthanc's REST API answered; raises if it exited or did not answer."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {process.returncode} before answering")
        try:
            status, _ = rest("/system")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
            continue
        if status == 200:
            return time.monotonic() - started
        time.sleep(0.05)
    raise RuntimeError(f"Orthanc's REST API did not answer within {deadline_s} s")


def read_back(sop_instance_uid: str) -> dict[str, Any]:
    """Find an instance by SOP Instance UID over REST and parse its stored file."""
    status, body = rest("/tools/lookup", data=sop_instance_uid.encode())
    matches = [m for m in json.loads(body or b"[]") if m.get("Type") == "Instance"]
    if status != 200 or len(matches) != 1:
        return {"found": False, "lookup_status": status}
    status, body = rest(f"/instances/{matches[0]['ID']}/file")
    ds = dcmread(io.BytesIO(body))
    return {
        "found": status == 200,
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "sop_class_uid": str(ds.SOPClassUID),
        "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
        "pixel_data_bytes": len(ds.PixelData) if "PixelData" in ds else None,
    }


def stop(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    """SIGTERM, then SIGKILL if Orthanc has not exited within 8 s."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=8)
        killed = False
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
        killed = True
    return {"stop_s": round(time.monotonic() - started, 2), "killed": killed}


def screen_and_send(archive: Path, out_dir: Path, config: Path) -> dict[str, Any]:
    """``screen run`` with ``--send-to`` this Orthanc; what the ledger recorded and Orthanc holds."""
    from screen.nightly.runner import RunOptions, run_screen

    destination = f"{ORTHANC_AET}@127.0.0.1:{DICOM_PORT}"
    summary = run_screen(archive, out_dir, config_path=config,
                         options=RunOptions(send_to=destination, allow_demo=True))
    with sqlite3.connect(out_dir / "ledger.sqlite") as db:
        rows = db.execute(
            "SELECT o.kind, o.sop_instance_uid, o.path, d.ok, d.status FROM objects o LEFT JOIN sends d "
            "ON d.sop_instance_uid = o.sop_instance_uid AND d.destination = ? ORDER BY o.rowid", (destination,)
        ).fetchall()
    objects = [{"kind": k, "sop_instance_uid": u, "path": p, "ok": ok, "status": st} for k, u, p, ok, st in rows]
    return {"sent": summary.sent, "exit_code": summary.exit_code, "objects": objects,
            "read_back": {o["sop_instance_uid"]: read_back(o["sop_instance_uid"]) for o in objects}}


def main(workdir: Path, files: list[Path], screen: tuple[Path, Path, Path] | None = None) -> dict[str, Any]:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
    config = workdir / "orthanc.json"
    config.write_text(json.dumps(orthanc_config(workdir), indent=2))
    log = (workdir / "orthanc.log").open("wb")
    process = subprocess.Popen(
        ["Orthanc", str(config)], stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent, cwd=workdir,
    )
    out: dict[str, Any] = {}
    try:
        out["rest_ready_s"] = round(wait_for_rest(process, deadline_s=20), 3)
        out["rest_without_auth"] = rest("/system", auth=False)[0]
        dest = Destination(ORTHANC_AET, "127.0.0.1", DICOM_PORT)
        started = time.monotonic()
        results = send_files(files, dest, calling_ae=SCREEN_AET, retries=1, backoff_s=0.2,
                             timeout_s=10)
        out["send_s"] = round(time.monotonic() - started, 3)
        out["results"] = [
            {"path": str(r.path), "sop_instance_uid": r.sop_instance_uid, "ok": r.ok,
             "status": r.status, "attempts": r.attempts, "error": r.error}
            for r in results
        ]
        out["read_back"] = {r.sop_instance_uid: read_back(r.sop_instance_uid) for r in results}
        # who may not store: an unknown calling AE title, and a wrong called AE title
        stranger = send_files(files[:1], dest, calling_ae="STRANGER", retries=0, timeout_s=10)
        wrong_called = send_files(files[:1], Destination("NOT_ORTHANC", "127.0.0.1", DICOM_PORT),
                                  calling_ae=SCREEN_AET, retries=0, timeout_s=10)
        out["refused"] = [
            {"ok": r.ok, "status": r.status, "attempts": r.attempts, "error": r.error}
            for r in (*stranger, *wrong_called)
        ]
        status, body = rest("/instances")
        out["instance_count"] = len(json.loads(body)) if status == 200 else None
        if screen is not None:
            out["screen"] = screen_and_send(*screen)
    finally:
        out.update(stop(process))
        log.close()
    return out


if __name__ == "__main__":
    workdir_arg, *file_args = sys.argv[1:]
    screen_args: tuple[Path, Path, Path] | None = None
    if "--screen" in file_args:
        at = file_args.index("--screen")
        screen_args = (Path(file_args[at + 1]), Path(file_args[at + 2]), Path(file_args[at + 3]))
        file_args = file_args[:at]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = main(Path(workdir_arg), [Path(f) for f in file_args], screen_args)
    print(json.dumps(result))
