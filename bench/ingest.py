"""Ingest benchmark: CPU seconds per file of the index pass and the decode pipeline, in one run.

    python -m bench.ingest [ARCHIVE] [--repeat N] [--small N]

ARCHIVE defaults to the committed sample archive; ``--small N`` writes N small files instead
(64x64 native pixels, the sample archive's header, four images a study) into a temporary folder,
the case where per-file overhead shows. Every pass is measured in CPU seconds of all the
processes it runs (this one, the forkserver and its workers: ``bench/cputime.py``), so the
figures hold on a shared machine, and in wall seconds. Passes:

  header-plain  ``pydicom.dcmread(f, stop_before_pixels=True)`` over the DICOM files, one process;
  index-1/-2    ``scan_archive`` (discover, header read, select, in 1 or 2 worker processes);
  pixel-plain   ``pydicom.dcmread(f).pixel_array`` over the selected files, one process;
  decode-here   the pixel pipeline (``decode_one``: decode, checks, LUTs, VOI, MONOCHROME1,
                float32 in [0, 1]) in this process, to split the time;
  decode-1/-2   the same in 1 or 2 worker processes, results back in this process.

Aims (issue 18, on 2 cores): index >= 0.8x the plain header loop in files per CPU second, and
>= 1.7x its 1-worker speed (wall) with 2 workers; decode >= 0.9x the plain pixel loop in images
per CPU second. The 2-worker wall figure only means something on an idle machine: the load
average is printed with it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pydicom

from bench.cputime import Measured, measure
from dicom_io.decode import DecodeTask, decode_one
from dicom_io.discover import discover
from dicom_io.pixels import PixelPolicy
from dicom_io.scan import scan_archive
from dicom_io.workers import run_tasks

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "archive"


@dataclass(frozen=True)
class Stage:
    """One measured pass: what it did and what it cost.

    Attributes:
        name: the pass (``index-1``, ``decode-2``, ...).
        items: files or images it handled (all repeats together).
        cost: wall and CPU seconds.
    """

    name: str
    items: int
    cost: Measured

    @property
    def cpu_ms(self) -> float:
        """CPU milliseconds per item, all processes."""
        return self.cost.per(self.items)

    @property
    def main_ms(self) -> float:
        """CPU milliseconds per item in this (the main) process."""
        return 1000.0 * self.cost.main_cpu_s / max(self.items, 1)

    @property
    def per_s(self) -> float:
        """Items per wall second."""
        return self.items / self.cost.wall_s if self.cost.wall_s > 0 else float("inf")


def write_small_archive(out: Path, count: int) -> Path:
    """``count`` small native files with the sample archive's header, four images a study."""
    import numpy as np
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    template = pydicom.dcmread(sorted(SAMPLE.rglob("*.dcm"))[0])
    template.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    template.Rows = template.Columns = 64
    template.BitsAllocated, template.BitsStored, template.HighBit, template.PixelRepresentation = 16, 12, 11, 0
    template.PixelData = (np.arange(64 * 64, dtype=np.uint16) % 4096).tobytes()
    for index in range(count):
        if index % 4 == 0:
            template.StudyInstanceUID, template.SeriesInstanceUID = generate_uid(), generate_uid()
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        template.InstanceNumber = index % 4 + 1
        folder = out / f"{index // 500:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        template.save_as(folder / f"{index}.dcm", enforce_file_format=True)
    return out


def _repeat(times: int, work: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        for _ in range(times):
            work()
    return run


def measure_ingest(archive: Path, repeat: int = 1, workers: tuple[int, ...] = (1, 2)) -> list[Stage]:
    """Every pass of the module docstring over ``archive``, ``repeat`` times each."""
    found = [f.path for f in discover(archive).found]
    images = [inst.path for inst in scan_archive(archive).selected]
    if not images:
        raise SystemExit(f"no selectable images under {archive}")
    stages = [Stage("header-plain", len(found) * repeat, measure(_repeat(repeat, lambda: [
        pydicom.dcmread(p, stop_before_pixels=True) for p in found]))[1])]
    for count in workers:
        stages.append(Stage(f"index-{count}", len(found) * repeat, measure(_repeat(
            repeat, lambda: scan_archive(archive, workers=count)))[1]))
    stages.append(Stage("pixel-plain", len(images) * repeat, measure(_repeat(repeat, lambda: [
        pydicom.dcmread(p).pixel_array for p in images]))[1]))
    tasks = [DecodeTask(p, PixelPolicy()) for p in images] * repeat
    stages.append(Stage("decode-here", len(tasks), measure(lambda: [decode_one(t) for t in tasks])[1]))
    for count in workers:
        failures: list[int] = []
        stage = Stage(f"decode-{count}", len(tasks), measure(lambda: failures.append(sum(
            o.failure is not None for o in run_tasks(decode_one, tasks, workers=count))))[1])
        if failures and failures[0]:
            print(f"warning: {failures[0]} decode failures with {count} worker(s)")
        stages.append(stage)
    return stages


def report(stages: list[Stage]) -> str:
    """The table and the ratios of the module docstring."""
    by = {s.name: s for s in stages}
    lines = [f"{'pass':<13} {'items':>6} {'CPU ms/item':>11} {'main ms':>8} {'wall s':>7} {'items/s':>8}"]
    for s in stages:
        lines.append(f"{s.name:<13} {s.items:>6} {s.cpu_ms:>11.3f} {s.main_ms:>8.3f} {s.cost.wall_s:>7.2f} "
                     f"{s.per_s:>8.1f}")
    plain, pixels = by["header-plain"], by["pixel-plain"]
    lines.append("ratios (CPU: items per CPU second against the plain loop; wall: items per second):")
    if "index-1" in by:
        lines.append(f"  index-1 per core      {plain.cpu_ms / by['index-1'].cpu_ms:5.2f}x the header loop   (aim >= 0.8x)")
    if "index-1" in by and plain.items < 2000:
        lines.append("    (few files: the index's fixed cost, a worker pool's start per pass, dominates; "
                     "measure it with --small 10000)")
    if "index-1" in by and "index-2" in by:
        lines.append(f"  index-2 / index-1     {by['index-2'].per_s / by['index-1'].per_s:5.2f}x wall            "
                     f"(aim >= 1.7x; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    for name in ("decode-1", "decode-2"):
        if name in by:
            lines.append(f"  {name} per core     {pixels.cpu_ms / by[name].cpu_ms:5.2f}x the pixel loop    (aim >= 0.9x)")
    here = by["decode-here"]
    lines.append("where a decoded image's CPU time goes (ms):")
    lines.append(f"  read + decode (the plain loop)            {pixels.cpu_ms:8.2f}")
    lines.append(f"  pipeline steps (checks, LUT/VOI, float32) {here.cpu_ms - pixels.cpu_ms:8.2f}")
    if "decode-1" in by:
        lines.append(f"  worker: start, send back the float32 image {by['decode-1'].cpu_ms - here.cpu_ms:7.2f}  "
                     f"(of which this process {by['decode-1'].main_ms:.2f})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", nargs="?", type=Path, default=SAMPLE)
    parser.add_argument("--repeat", type=int, default=2, help="passes over the file list per measurement")
    parser.add_argument("--small", type=int, default=0, metavar="N", help="measure N small files instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        archive = write_small_archive(Path(scratch), args.small) if args.small else args.archive
        print(f"archive: {archive if not args.small else f'{args.small} small files'}; x{args.repeat} passes; "
              "CPU seconds of all processes (the machine may be shared: wall figures are not)")
        print(report(measure_ingest(archive, args.repeat)))


if __name__ == "__main__":
    main()
