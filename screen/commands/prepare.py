"""The ``screen prepare`` command: a labelled archive → training data (thin over :mod:`train.prepare`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # pragma: no cover - typing only
    from train.prepare import PrepareSummary


def run_prepare(archive: Path, labels_csv: Path, out_dir: Path, *, seed: int = 0, val: float = 0.15,
                test: float = 0.15, workers: int = 1, config_path: Path | None = None,
                overwrite: bool = False, progress: bool = False) -> "PrepareSummary":
    """Prepare ``archive`` into ``out_dir``; the site config (if given) supplies ``[selection]``.

    Callable without Click; ``progress`` shows bars on a terminal (log lines otherwise).
    """
    from screen.site_config import load_site_config
    from train.prepare import PrepareOptions, prepare_dataset

    options = PrepareOptions(seed=seed, val=val, test=test, workers=workers, overwrite=overwrite)
    if config_path is not None:
        options = replace(options, rules=load_site_config(config_path).selection)
    from screen.nightly.progress import progress as show_progress

    return prepare_dataset(archive, labels_csv, out_dir, options, progress=show_progress if progress else None)


@click.command("prepare")
@click.argument("archive", type=click.Path(exists=True, path_type=Path))
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="Labels CSV: StudyInstanceUID, SOPInstanceUID, label, x0, y0, x1, y1 (source pixels).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Data folder to write: images/, train|val|test/*.jsonl, manifest.json.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the patient split.")
@click.option("--val", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.15, show_default=True,
              help="Share of patients (per label) for validation.")
@click.option("--test", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.15, show_default=True,
              help="Share of patients (per label) held out for testing.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes for reading headers and decoding.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Site config whose [selection] rules pick the images (default: CR, DX, DR).")
@click.option("--overwrite", is_flag=True, help="Write into a non-empty --out, replacing an earlier prepare.")
def prepare_cmd(archive: Path, labels_csv: Path, out_dir: Path, seed: int, val: float, test: float, workers: int,
                config_path: Path | None, overwrite: bool) -> None:
    """Turn the labelled DICOM archive ARCHIVE into training data, split by patient.

    Images go through the same pixel pipeline as `screen run` and are stored as 16-bit PNGs;
    the classifier, detector and box JSONL of each split and a manifest of source hashes are
    written beside them. Patients are written as salted hashes (salt from $FRACTURE_SCREEN_SALT).
    """
    from train.prepare import summary_table

    summary = run_prepare(archive, labels_csv, out_dir, seed=seed, val=val, test=test, workers=workers,
                          config_path=config_path, overwrite=overwrite, progress=True)
    click.echo(summary_table(summary))
    click.echo(f"wrote {summary.n_images} images and {summary.manifest}")
