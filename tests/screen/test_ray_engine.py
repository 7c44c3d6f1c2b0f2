"""``screen run --engine ray``: the same night on a local Ray (2 CPUs, loopback only), compared
with the local engine, and the one-machine guarantees inside it (a bad or hanging file is a row
with its reason, the deadline, resume, a placement that cannot fit)."""

from __future__ import annotations

import csv
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from screen.nightly.ray_engine import LOCAL_ONLY_ENV, ray_session

os.environ.setdefault(LOCAL_ONLY_ENV, "0")  # before ray is imported: its ports on 127.0.0.1 only
import ray  # noqa: E402

from dicom_io.decode import DecodeTask  # noqa: E402
from dicom_io.pixels import PixelPolicy  # noqa: E402
from screen.cli import cli  # noqa: E402
from screen.errors import ConfigError  # noqa: E402
from screen.nightly.ray_engine import StudyTask, _decode_studies, _objects, check_fits, night_dataset  # noqa: E402
from screen.nightly.runner import RunOptions, run_screen  # noqa: E402
from screen.site_config import DEFAULT_CONFIG, PROJECT_ROOT, RayResources, load_site_config  # noqa: E402

ARCHIVE = PROJECT_ROOT / "sample_data" / "archive"
#: Fractional requests so three member actors and the decode tasks share 2 CPUs.
RAY_SECTION = "[ray]\nmember_cpus = 0.25\ndecode_cpus = 0.5\nstudies_per_task = 2\n"
RAY_RESOURCES = RayResources(member_cpus=0.25, decode_cpus=0.5, studies_per_task=2)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray instance for the module (2 CPUs, loopback), as a site's run would start."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"
    yield
    ray.shutdown()


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["study_instance_uid"]: row for row in csv.DictReader(handle)}


def _findings(path: Path) -> list[tuple[str, ...]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return sorted((r["sop_instance_uid"], r["col0"], r["row0"], r["col1"], r["row1"], r["level"], r["members"])
                  for r in rows)


def _content(dataset: pydicom.Dataset) -> list[tuple[Any, ...]]:
    """An SR's content tree as (concept, value) pairs, UIDs and times left out."""
    items: list[tuple[Any, ...]] = []
    for item in dataset.get("ContentSequence", []):
        concept = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
        kind = item.ValueType
        if kind == "TEXT":
            items.append((concept, item.TextValue))
        elif kind == "CODE":
            items.append((concept, item.ConceptCodeSequence[0].CodeMeaning))
        elif kind == "NUM":
            items.append((concept, float(item.MeasuredValueSequence[0].NumericValue)))
        elif kind == "SCOORD":
            items.append((concept, item.GraphicType, tuple(float(v) for v in item.GraphicData)))
        elif kind in ("UIDREF", "DATETIME", "DATE", "TIME"):
            items.append((concept, kind))
        else:
            items.append((concept, kind))
        items.extend(_content(item))
    return items


def _close(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if len(x) != len(y):
            return False
        for u, v in zip(x, y):
            if isinstance(u, float) and isinstance(v, float):
                if abs(u - v) > 1e-4:  # the SR's decimal strings carry 6 significant digits
                    return False
            elif isinstance(u, tuple):
                if not np.allclose(u, v, atol=1e-3):
                    return False
            elif u != v:
                return False
    return True


#: The sample archive's first eight patients (9 studies, 4 with a fracture, one patient with two
#: studies): the whole archive took this test about 50 s of the suite's 10 minutes.
SUBSET_PATIENTS = 8


def _sample_subset(root: Path) -> tuple[Path, int]:
    """A copy of the first :data:`SUBSET_PATIENTS` patient folders of the sample archive, and
    how many studies they hold (from its labels)."""
    patients = sorted(p.name for p in ARCHIVE.iterdir() if p.is_dir())[:SUBSET_PATIENTS]
    for name in patients:
        shutil.copytree(ARCHIVE / name, root / name)
    with open(PROJECT_ROOT / "sample_data" / "labels.csv", newline="", encoding="utf-8") as handle:
        studies = {r["StudyInstanceUID"] for r in csv.DictReader(handle) if r["PatientID"] in patients}
    return root, len(studies)


def test_ray_engine_writes_what_the_local_engine_writes(tmp_path: Path, local_ray: None) -> None:
    """Part of the sample archive and the committed members, both engines: the same studies,
    decisions, member and fused scores (to 1e-6), boxes, and SRs of the same content with new UIDs."""
    archive, n_studies = _sample_subset(tmp_path / "archive")
    assert n_studies == 9
    site = load_site_config(DEFAULT_CONFIG).replace(ray=RAY_RESOURCES)
    outs = {}
    for engine in ("local", "ray"):
        outs[engine] = tmp_path / engine
        summary = run_screen(archive, outs[engine], config=site, options=RunOptions(engine=engine))
        assert summary.exit_code == 0 and summary.counts["screened"] == n_studies
    local, remote = _rows(outs["local"] / "studies.csv"), _rows(outs["ray"] / "studies.csv")
    assert set(local) == set(remote) and len(local) == n_studies
    scores = [c for c in next(iter(local.values())) if c == "fused_score" or c.startswith("score:")]
    assert len(scores) == 4
    for uid, row in local.items():
        other = remote[uid]
        assert (row["status"], row["decision"], row["level"], row["n_boxes"]) == \
            (other["status"], other["decision"], other["level"], other["n_boxes"]), uid
        for column in scores:
            assert abs(float(row[column]) - float(other[column])) <= 1e-6, (uid, column)
        assert row["sr_sop_instance_uid"] != other["sr_sop_instance_uid"]  # new UIDs
        mine = pydicom.dcmread(outs["local"] / row["sr_path"])
        theirs = pydicom.dcmread(outs["ray"] / other["sr_path"])
        assert _close(_content(mine), _content(theirs)), uid
    assert sum(r["decision"] == "positive" for r in local.values()) >= 3  # a comparison with findings in it
    local_boxes, remote_boxes = _findings(outs["local"] / "findings.csv"), _findings(outs["ray"] / "findings.csv")
    assert local_boxes and len(local_boxes) == len(remote_boxes)
    for a, b in zip(local_boxes, remote_boxes):
        assert a[0] == b[0] and a[5:] == b[5:]
        assert np.allclose([float(v) for v in a[1:5]], [float(v) for v in b[1:5]], atol=1e-3)


def _ray_site(tmp_path: Path, tiny_models: Path, site_writer: Any, **kwargs: Any) -> Path:
    return site_writer(tmp_path / "site", tiny_models, extra=RAY_SECTION, **kwargs)


def test_a_hanging_file_times_out_alone_inside_the_decode_task(tmp_path: Path, small_archive: Path) -> None:
    """Ray Data has no per-row timeout: the decode task reads each file in a child process, so a
    FIFO swapped in for a file after the index pass is that file's ``timeout``, and its study's
    other image still decodes."""
    good = sorted(small_archive.rglob("*.dcm"))[0]
    fifo = tmp_path / "stuck.dcm"
    os.mkfifo(fifo)
    policy = PixelPolicy()
    batch = {"item": _objects([StudyTask("1.2.3", (DecodeTask(fifo, policy), DecodeTask(good, policy)))])}
    out = _decode_studies(batch, timeout_s=2.0, deadline_epoch=None)
    stuck, fine = out["result"]
    assert stuck.failure is not None and stuck.failure.reason == "timeout" and stuck.seen is None
    assert out["image"][0] is None and list(out["decoded"]) == [False, True]
    assert fine.failure is None and fine.seen is not None and out["image"][1].pixels.shape == (fine.seen.rows,
                                                                                              fine.seen.cols)


def test_decode_task_defers_studies_after_the_deadline(small_archive: Path) -> None:
    files = sorted(small_archive.rglob("*.dcm"))[:2]
    batch = {"item": _objects([StudyTask(f"1.2.{i}", (DecodeTask(f, PixelPolicy()),)) for i, f in enumerate(files)])}
    out = _decode_studies(batch, timeout_s=30.0, deadline_epoch=0.0)  # long past
    assert [(r.study, r.deferred) for r in out["result"]] == [("1.2.0", True), ("1.2.1", True)]


def test_deadline_defers_every_study_not_started(tmp_path: Path, tiny_models: Path, site_writer: Any,
                                                 small_archive: Path, local_ray: None) -> None:
    times = iter([datetime(2026, 12, 6, 6, 29)])

    def clock() -> datetime:  # 06:29 when the deadline is read, 06:31 from then on
        return next(times, datetime(2026, 12, 6, 6, 31))

    site = _ray_site(tmp_path, tiny_models, site_writer)
    summary = run_screen(small_archive, tmp_path / "out", config_path=site,
                         options=RunOptions(engine="ray", deadline="06:30"), clock=clock)
    assert summary.counts["deferred"] == 5 and summary.counts.get("screened", 0) == 0
    assert len(summary.deferred) == 5 and summary.exit_code == 0


def test_a_placement_the_cluster_cannot_hold_is_refused(local_ray: None) -> None:
    with pytest.raises(ConfigError, match=r"asks for 3\.5 CPUs .* has 2"):
        check_fits(RayResources(member_cpus=1.0, decode_cpus=0.5), members=3)
    with pytest.raises(ConfigError, match="member_gpus"):
        check_fits(RayResources(member_cpus=0.25, member_gpus=1.0), members=3)
    check_fits(RayResources(member_cpus=0.25, decode_cpus=0.5), members=3)  # fits: no error


def test_address_needs_the_ray_engine(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", str(ARCHIVE), "--out", str(tmp_path / "out"), "--address", "auto"])
    assert result.exit_code == 2 and "--engine ray" in result.output


def test_ray_section_is_validated(tmp_path: Path, tiny_models: Path, site_writer: Any) -> None:
    site = site_writer(tmp_path / "site", tiny_models, extra="[ray]\nmember_cpus = 0\n")
    with pytest.raises(ConfigError, match="member_cpus"):
        load_site_config(site)


def test_ray_session_leaves_a_running_ray_alone(local_ray: None) -> None:
    with ray_session(RayResources()):
        assert ray.is_initialized()
    assert ray.is_initialized()  # the test's instance, not the run's: still there


def test_decoding_stays_out_of_the_member_actors(local_ray: None, capsys: pytest.CaptureFixture[str]) -> None:
    """Ray Data fuses a task stage into the next actor stage when their requests match; decoding
    fused into the first member's actor would stall that member's GPU image by image."""
    from dicom_io.scan import scan_archive
    from screen.nightly.plan import plan_studies

    site = load_site_config(DEFAULT_CONFIG).replace(ray=RAY_RESOURCES)
    plans = plan_studies(scan_archive(ARCHIVE, rules=site.selection), rules=site.selection)[:2]
    night_dataset(plans, site, policy=PixelPolicy(), device="cpu", batch_size=4, deadline_epoch=None).explain()
    physical = capsys.readouterr().out.split("Physical Plan (Optimized)")[-1]
    assert "TaskPoolMapOperator[MapBatches(_decode_studies)]" in physical
    assert physical.count("ActorPoolMapOperator[MapBatches(_MemberActor)]") == 3  # one pool per member
