"""Ingest benchmark: index pass and decode pipeline against a plain pydicom loop, in one run.

    python bench/ingest.py [ARCHIVE] [--repeat N]

ARCHIVE defaults to the committed sample archive. Prints files/s for:
  baseline  ``pydicom.dcmread(f).pixel_array`` over the selected files, one process;
  index     the header-only index pass (discover + read_instance + select), one process;
  decode-1  the full pixel pipeline (decode, LUTs, VOI, MONOCHROME1, [0,1]) with 1 worker;
  decode-2  the same with 2 worker processes (pool start-up included);
and the ratios the ingest issue aims at: index >= 5x baseline, decode-2 >= 1.6x baseline.
Each pass repeats the file list ``--repeat`` times so short archives still time well.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pydicom

from dicom_io.decode import DecodeTask, decode_one
from dicom_io.scan import scan_archive
from dicom_io.pixels import PixelPolicy
from dicom_io.workers import run_tasks

ROOT = Path(__file__).resolve().parent.parent


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", nargs="?", type=Path, default=ROOT / "sample_data" / "archive")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the file list per measurement")
    args = parser.parse_args()

    probe = scan_archive(args.archive)
    files = [inst.path for inst in probe.selected]
    if not files:
        raise SystemExit(f"no selectable images under {args.archive}")
    n = len(files) * args.repeat
    print(f"archive: {args.archive} ({len(files)} selected images, {len(probe.rows)} files; x{args.repeat} passes)")

    start = time.perf_counter()
    for _ in range(args.repeat):
        for path in files:
            pydicom.dcmread(path).pixel_array
    baseline = _rate(n, time.perf_counter() - start)

    start = time.perf_counter()
    for _ in range(args.repeat):
        scan_archive(args.archive)
    index = _rate(len(probe.rows) * args.repeat, time.perf_counter() - start)

    policy = PixelPolicy()
    tasks = [DecodeTask(p, policy) for p in files] * args.repeat
    results = {}
    for workers in (1, 2):
        start = time.perf_counter()
        failures = sum(o.failure is not None for o in run_tasks(decode_one, tasks, workers=workers))
        results[workers] = _rate(len(tasks), time.perf_counter() - start)
        if failures:
            print(f"warning: {failures} decode failures with {workers} worker(s)")

    print(f"{'pass':<10} {'files/s':>9} {'vs baseline':>12}")
    print(f"{'baseline':<10} {baseline:>9.1f} {1.0:>11.2f}x")
    print(f"{'index':<10} {index:>9.1f} {index / baseline:>11.2f}x   (aim >= 5x)")
    print(f"{'decode-1':<10} {results[1]:>9.1f} {results[1] / baseline:>11.2f}x")
    print(f"{'decode-2':<10} {results[2]:>9.1f} {results[2] / baseline:>11.2f}x   (aim >= 1.6x)")


if __name__ == "__main__":
    main()
