"""``screen scan``: what happens to every file of an archive, as ``scan.csv`` and a summary."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import click

from dicom_io.scan import DUPLICATE_OF, SCAN_COLUMNS, ScanResult, scan_archive
from dicom_io.select import SelectionRules
from dicom_io.tables import SCAN, write_table
from screen.id_key import pseudonym
from screen.nightly.progress import progress


def write_scan_csv(result: ScanResult, path: Path, *, path_key: bytes | None = None) -> Path:
    """Write one row per file to ``path`` (atomically) and return it.

    With ``path_key`` the source paths are not written (an archive laid out by PatientID would
    put the ids in them): ``path`` is empty and ``path_key`` holds a keyed pseudonym of the path
    (the site can recompute it for a file it suspects, nobody else can invert it).
    """
    columns = list(SCAN_COLUMNS) + (["path_key"] if path_key is not None else [])
    rows = [row.as_dict() for row in result.rows]
    if path_key is not None:
        rows = [_without_paths(values, path_key) for values in rows]
    return write_table(path, SCAN, rows, columns)


def _without_paths(values: dict[str, Any], key: bytes) -> dict[str, Any]:
    shown = str(values["path"])
    message = str(values.get("message") or "")
    if message.startswith(DUPLICATE_OF):  # the one message that names another file
        message = DUPLICATE_OF + "file " + pseudonym(key, "path", message[len(DUPLICATE_OF):])
    return {**values, "path": "", "path_key": pseudonym(key, "path", shown),
            "message": message.replace(shown, "this file") if shown else message}


def summary_table(result: ScanResult) -> str:
    """A plain-text table: files by outcome and reason, then studies/series/images selected."""
    counts: Counter[tuple[str, str]] = result.counts()
    order = {"selected": 0, "skipped": 1, "failed": 2}
    lines = [f"{'outcome':<9} {'reason':<26} {'files':>7}", "-" * 44]
    for (outcome, reason), n in sorted(counts.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1])):
        lines.append(f"{outcome:<9} {reason or '-':<26} {n:>7}")
    lines.append("-" * 44)
    lines.append(f"{'total':<36} {len(result.rows):>7}")
    n_series = sum(len(s.series) for s in result.studies.values())
    lines.append(
        f"selected: {len(result.selected)} images in {n_series} series of {len(result.studies)} studies"
    )
    return "\n".join(lines)


def run_scan(
    archive: Path,
    out_dir: Path,
    *,
    decode: bool = False,
    workers: int = 1,
    rules: SelectionRules = SelectionRules(),
) -> tuple[ScanResult, Path]:
    """Scan ``archive`` and write ``out_dir/scan.csv``; callable without Click."""
    result = scan_archive(archive, rules=rules, decode=decode, workers=workers, progress=progress)
    csv_path = write_scan_csv(result, Path(out_dir) / "scan.csv")
    return result, csv_path


@click.command("scan")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("scan-out"),
              show_default=True, help="Folder for scan.csv.")
@click.option("--decode/--no-decode", default=False, show_default=True,
              help="Also run the pixel pipeline on selected images and record decode failures.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes for reading headers and decoding.")
@click.option("--modality", "modalities", multiple=True, metavar="MOD",
              help="Modalities to select (repeatable); default CR, DX, DR.")
@click.option("--body-part", "body_parts", multiple=True, metavar="PART",
              help="Only select these BodyPartExamined values (repeatable).")
@click.option("--allow-burned-in", is_flag=True, help="Select images that declare burned-in annotation.")
def scan_cmd(path: Path, out_dir: Path, decode: bool, workers: int, modalities: tuple[str, ...],
             body_parts: tuple[str, ...], allow_burned_in: bool) -> None:
    """Say what happens to every file under PATH: one row per file in OUT/scan.csv."""
    from dicom_io.select import SelectionRules

    rules_args: dict[str, Any] = {"body_parts": body_parts, "allow_burned_in": allow_burned_in}
    if modalities:
        rules_args["modalities"] = modalities
    result, csv_path = run_scan(path, out_dir, decode=decode, workers=workers, rules=SelectionRules(**rules_args))
    click.echo(summary_table(result))
    click.echo(f"wrote {csv_path}")
