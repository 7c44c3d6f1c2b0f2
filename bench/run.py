"""Nightly-run benchmark: studies/s of ``screen run`` and the share of time outside the members.

    python bench/run.py [ARCHIVE] [--config site.toml] [--repeat N] [--workers N]

Runs the whole pipeline (scan, decode in workers, members, fusion, SR and CSV writing, ledger)
on ARCHIVE (default: the committed sample archive) with the site config (default: the demo
members in sample_data/site.toml) into a fresh temporary folder, ``--repeat`` times, and
prints for each run: studies/s, and the share of the run's wall time (member loading excluded,
it happens once a night) spent outside the members' forward passes. Aim: at most 25 %.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from screen.site_config import load_site_config
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
    for index in range(args.repeat):
        with tempfile.TemporaryDirectory() as out:
            summary = run_screen(args.archive, Path(out), config=config,
                                 options=RunOptions(workers=args.workers, batch_size=args.batch_size))
        t = summary.timings
        run_s = t["wall"] - t.get("load-members", 0.0)
        members_s = t.get("members", 0.0)
        studies = summary.counts.get("screened", 0)
        outside = (run_s - members_s) / run_s if run_s > 0 else float("nan")
        print(f"{index + 1:>3} {studies:>7} {summary.images:>6} {run_s:>7.2f} {studies / run_s:>9.2f} "
              f"{members_s:>9.2f} {outside:>7.1%}")
        detail = ", ".join(f"{k} {v:.2f}s" for k, v in sorted(t.items()))
        print(f"    phases: {detail}")
    print("aim: outside-members share <= 25 % of the run's wall time")


if __name__ == "__main__":
    main()
