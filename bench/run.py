"""Nightly-run benchmark: studies/s of ``screen run`` and the share of time outside the members.

    python -m bench.run [ARCHIVE] [--config site.toml] [--repeat N] [--workers N]

Runs the whole pipeline (scan, decode in workers, members, fusion, SR and CSV writing, ledger)
on ARCHIVE (default: the committed sample archive) with the site config (default: the demo
members in sample_data/site.toml) into a fresh temporary folder, ``--repeat`` times, and
prints for each run: studies/s, and the share of the run's wall time (member loading excluded,
it happens once a night) spent outside the members' forward passes. Aim: at most 25 %.

It also prints what the results people look at cost (issue 15): the morning page (the run's
own timing of ``write_report``, ``run.json`` ``report.seconds``, plus its ``page`` phase: the
previews kept at decode and the thumbnails drawn as each flagged study finishes) and the presentation states
(the run's own ``gsps`` phase; as a cross-check, the run's time outside the members with
``[output] write_gsps`` on less the same with it off, which is noisy on a shared machine), per
screened study and as a share of the run's wall time. Aim: under 10 %.

Last, CPU seconds per image of each stage (issue 18), so a bigger box's capacity can be read
off: the index (``scan_archive``), the decode pipeline (``decode_one`` in the worker processes),
each member's forward passes (this process, torch's threads included), each measured alone on
the same archive, and the rest of the run (fusion, SR/CSV/GSPS writing, ledger, page), which is
the whole run's CPU (all processes) less those. ``bench/throughput.py`` projects them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from bench.cputime import measure
from dicom_io.decode import DecodeTask, decode_one
from dicom_io.pixels import PixelPolicy
from dicom_io.scan import scan_archive
from dicom_io.workers import default_workers, run_tasks
from screen.site_config import SiteConfig, load_site_config
from screen.nightly import runner
from screen.nightly.ledger import Ledger
from screen.nightly.runner import RunOptions, run_screen
from screen.nightly.site_members import load_members

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", nargs="?", type=Path, default=ROOT / "sample_data" / "archive")
    parser.add_argument("--config", type=Path, default=None, help="site config (default: sample_data/site.toml)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()
    config = load_site_config(args.config)
    print(f"archive: {args.archive}; members: {', '.join(m.name for m in config.members)}")
    print(f"{'run':>3} {'studies':>7} {'images':>6} {'run s':>7} {'studies/s':>9} {'members s':>9} {'outside':>8}")
    options = RunOptions(workers=args.workers, batch_size=args.batch_size)
    extras: list[tuple[float, float | None, float | None, float, int]] = []  # page, GSPS, on-off, run s, studies
    for index in range(args.repeat):
        with tempfile.TemporaryDirectory() as out:
            summary = run_screen(args.archive, Path(out), config=config, options=options)
            page_s = float(json.loads((Path(out) / "run.json").read_text(encoding="utf-8"))
                           .get("report", {}).get("seconds", float("nan")))
        page_s += summary.timings.get("page", 0.0)  # previews and thumbnails made during the night
        gsps_s = _gsps_seconds(args.archive, config, options, summary.timings)
        t = summary.timings
        run_s = t["wall"] - t.get("load-members", 0.0)
        members_s = t.get("members", 0.0)
        studies = summary.counts.get("screened", 0)
        outside = (run_s - members_s) / run_s if run_s > 0 else float("nan")
        print(f"{index + 1:>3} {studies:>7} {summary.images:>6} {run_s:>7.2f} {studies / run_s:>9.2f} "
              f"{members_s:>9.2f} {outside:>7.1%}")
        detail = ", ".join(f"{k} {v:.2f}s" for k, v in sorted(t.items()))
        print(f"    phases: {detail}")
        extras.append((page_s, t.get("gsps", gsps_s), gsps_s, t["wall"] - t.get("load-members", 0.0) + page_s,
                       studies))
    print("aim: outside-members share <= 25 % of the run's wall time")
    print(f"{'run':>3} {'page s':>7} {'GSPS s':>7} {'on-off s':>8} {'per study ms':>12} {'share of wall':>13}")
    for index, (page_s, gsps_s, on_off, wall_s, studies) in enumerate(extras):
        extra = page_s + (gsps_s or 0.0)
        gsps = f"{gsps_s:>7.2f}" if gsps_s is not None else f"{'off':>7}"
        check = f"{on_off:>8.2f}" if on_off is not None else f"{'-':>8}"
        print(f"{index + 1:>3} {page_s:>7.2f} {gsps} {check} {1000 * extra / max(studies, 1):>12.1f} "
              f"{extra / wall_s:>12.1%}")
    if any(gsps_s is None for _, gsps_s, _, _, _ in extras):
        print("[output] write_gsps is off in this site config: the page part only")
    print("aim: GSPS + page under 10 % of the run's wall time (member loading excluded)")
    costs = stage_costs(args.archive, config, options)
    print(format_costs(costs))


def stage_costs(archive: Path, config: SiteConfig, options: RunOptions = RunOptions(), *,
                members: bool = True) -> dict[str, float]:
    """CPU milliseconds per image of each stage (see the module docstring), plus ``images``,
    ``files`` and ``studies`` (counts); ``index`` is per file. ``members=False`` skips
    measuring each member alone (the run's ``members`` phase is kept)."""
    workers = options.workers or config.run.workers or default_workers()
    list(run_tasks(abs, [1]))  # the forkserver starts once a process: not a per-file cost
    scan, index = measure(lambda: scan_archive(archive, rules=config.selection, workers=workers))
    paths = [inst.path for inst in scan.selected]
    policy = PixelPolicy(max_pixel_bytes=config.selection.max_pixel_bytes)
    decoded, decode = measure(lambda: [o.result for o in run_tasks(
        decode_one, [DecodeTask(p, policy) for p in paths], workers=workers) if o.result is not None])
    images = [r.pixels for r in decoded]
    n = max(len(images), 1)
    costs: dict[str, float] = {"files": float(len(scan.rows)), "images": float(len(images)),
                               "studies": float(len(scan.studies)),
                               "index": index.per(len(scan.rows)), "decode": decode.per(n)}
    if members:
        batch = options.batch_size or config.run.batch_size
        for loaded in load_members(config, device=options.device, batch_size=options.batch_size):
            _, cost = measure(lambda: [loaded.member.predict(images[i:i + batch])
                                       for i in range(0, len(images), batch)])
            costs[f"member:{loaded.name}"] = cost.per(n)
    with tempfile.TemporaryDirectory() as out, _phase_cpu() as phases:
        summary, whole = measure(lambda: run_screen(archive, Path(out), config=config, options=options))
    costs["members"] = 1000.0 * phases.get("members", 0.0) / n
    # the writers' CPU (their own processes) by phase, and the driver's preparing and recording
    writers = sum(summary.writer_cpu.get(k, 0.0) for k in ("write", "gsps", "sc", "page"))
    costs["rest"] = 1000.0 * (writers + phases.get("page", 0.0) + phases.get("record", 0.0)) / n
    costs["ledger"] = 1000.0 * phases.get("ledger", 0.0) / n
    costs["ledger-wall"] = 1000.0 * phases.get("ledger-wall", 0.0) / n  # wall ms: a commit waits on fsync
    costs["run"] = 1000.0 * (whole.cpu_s - phases.get("load-members", 0.0)) / n
    return costs


@contextmanager
def _phase_cpu() -> Iterator[dict[str, float]]:
    """CPU seconds of this process in each of the runner's timed phases (its ``_Timer``s time
    wall seconds; this adds the CPU beside them for the bench, without changing the runner)."""
    cpu: defaultdict[str, float] = defaultdict(float)
    enter, leave = runner._Timer.__enter__, runner._Timer.__exit__

    def timed_enter(self: Any) -> None:
        self.cpu_start = time.process_time()
        enter(self)

    def timed_exit(self: Any, *exc: object) -> None:
        leave(self, *exc)
        spent = time.process_time() - self.cpu_start
        cpu[self.phase] += spent
        if self.within is not None:
            cpu[self.within] -= spent

    record = Ledger.record_study

    def timed_record(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        start, wall = time.process_time(), time.perf_counter()
        try:
            return record(self, *args, **kwargs)
        finally:  # the driver's own share on a cluster; its commits wait on the disk too
            cpu["ledger"] += time.process_time() - start
            cpu["ledger-wall"] += time.perf_counter() - wall

    runner._Timer.__enter__, runner._Timer.__exit__ = timed_enter, timed_exit  # type: ignore[method-assign]
    Ledger.record_study = timed_record  # type: ignore[method-assign]
    try:
        yield cpu
    finally:
        runner._Timer.__enter__, runner._Timer.__exit__ = enter, leave  # type: ignore[method-assign]
        Ledger.record_study = record  # type: ignore[method-assign]


def format_costs(costs: dict[str, float]) -> str:
    """The stage table: CPU ms per image (the index per file)."""
    lines = [f"CPU ms per image ({int(costs['images'])} images, {int(costs['files'])} files, "
             f"{int(costs['studies'])} studies; all processes; measured here):"]
    lines.append(f"  {'index (per file)':<28} {costs['index']:9.2f}")
    lines.append(f"  {'decode':<28} {costs['decode']:9.2f}")
    for key, value in costs.items():
        if key.startswith("member:"):
            lines.append(f"  {key:<28} {value:9.2f}")
    lines.append(f"  {'members (in the run)':<28} {costs['members']:9.2f}   (this process, torch threads included)")
    lines.append(f"  {'rest (fusion, writers, ledger)':<28} {costs['rest']:9.2f}   (the writers' write, gsps, sc, page "
                 "phases; the driver's page previews and record)")
    lines.append(f"  {'of which ledger commits':<28} {costs['ledger']:9.2f}   (the driver's share on a cluster; "
                 f"{costs['ledger-wall']:.2f} ms wall)")
    lines.append(f"  {'whole run':<28} {costs['run']:9.2f}   (member loading excluded)")
    return "\n".join(lines)


def _outside_members(timings: dict[str, float]) -> float:
    return timings["wall"] - timings.get("load-members", 0.0) - timings.get("members", 0.0)


def _gsps_seconds(archive: Path, config: SiteConfig, options: RunOptions,
                  timings: dict[str, float]) -> float | None:
    """Time outside the members with presentation states on (``timings``) less a run without
    them; ``None`` when ``[output] write_gsps`` is off."""
    if not config.output.write_gsps:
        return None
    off = config.model_copy(update={"output": config.output.model_copy(update={"write_gsps": False})})
    with tempfile.TemporaryDirectory() as out:
        without = run_screen(archive, Path(out), config=off, options=options)
    return max(0.0, _outside_members(timings) - _outside_members(without.timings))


if __name__ == "__main__":
    main()
