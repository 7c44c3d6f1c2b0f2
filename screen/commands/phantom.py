"""``screen phantom``: write the synthetic phantom archive (docs/phantom.md) and its labels."""

from __future__ import annotations

from pathlib import Path

import click

from dicom_io.phantom.config import STYLES


@click.command("phantom")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--labels", "labels_csv", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the labels CSV (keep it outside OUT_DIR).")
@click.option("--studies", type=click.IntRange(min=1), default=24, show_default=True, help="Number of studies.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed; the same seed regenerates the same bytes.")
@click.option("--positive-fraction", type=click.FloatRange(0.0, 1.0), default=0.4, show_default=True,
              help="Share of studies with a fracture.")
@click.option("--style", type=click.Choice(list(STYLES)), default="rods", show_default=True,
              help="What the images show: rods (the phantom), toy (bright shapes on noise, for the "
                   "detector's learnability check), randomised (the rods task with every rendering "
                   "factor varied, for training), shifted or shifted-2 (two renderings outside "
                   "randomised's ranges, for measurement only); docs/phantom.md \"Styles\".")
@click.option("--overwrite", is_flag=True,
              help="Write into a non-empty OUT_DIR, deleting .dcm files this config does not produce.")
def phantom_cmd(out_dir: Path, labels_csv: Path, studies: int, seed: int, positive_fraction: float,
                style: str, overwrite: bool) -> None:
    """Write a synthetic phantom archive (docs/phantom.md) and its labels CSV, bit for bit from SEED."""
    from dicom_io.phantom import PhantomConfig, write_phantom_archive

    config = PhantomConfig(n_studies=studies, seed=seed, positive_fraction=positive_fraction, style=style)
    s = write_phantom_archive(out_dir, labels_csv, config, overwrite=overwrite)
    click.echo(
        f"wrote {s.n_images} images in {s.n_studies} studies of {s.n_patients} patients "
        f"({s.n_positive_studies} positive studies, {s.n_boxes} boxes), {s.total_bytes / 1e6:.1f} MB, to {s.out_dir}"
    )
    click.echo(f"labels: {s.labels_csv}")
