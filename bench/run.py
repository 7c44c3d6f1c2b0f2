"""Nightly-run benchmark: studies/s of ``screen run`` and the share of time outside the members.

    python bench/run.py [ARCHIVE] [--config site.toml] [--repeat N] [--workers N]

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
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from screen.site_config import SiteConfig, load_site_config
from screen.nightly.runner import RunOptions, run_screen

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
