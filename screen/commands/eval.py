"""The ``screen eval`` command: the site's members and ensemble on a labelled set (thin over
:func:`train.evaluate.evaluate`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # pragma: no cover - typing only
    from train.evaluate import EvalResult

SPLIT_CHOICES = ("train", "val", "test")


def run_eval(
    source: Path,
    out_dir: Path,
    *,
    labels_csv: Path | None = None,
    config_path: Path | None = None,
    operating_point: Path | None = None,
    split: str = "test",
    batch_size: int | None = None,
    workers: int | None = None,
    device: str | None = None,
    bootstrap: int = 2000,
    seed: int = 0,
    progress: bool = False,
) -> "EvalResult":
    """Load the site's members as ``screen run`` does and evaluate them on ``source``.

    The operating point is ``operating_point``, else the site config's, else (before any tuning)
    every member's ``member.json`` threshold with the any-vote (the summary and report say so).
    Callable without Click.
    """
    from screen.site_config import load_site_config
    from screen.nightly.site_members import load_members
    from train.evaluate import EvalOptions, evaluate

    site = load_site_config(config_path)
    point = operating_point or site.operating_point  # None before tuning: member.json thresholds
    if point is not None and not point.is_file():
        from screen.errors import ConfigError

        raise ConfigError(f"operating point {str(point)!r} not found; fix the site config's "
                          "operating_point, or remove it to evaluate with each member's own threshold")
    members = load_members(site, device=device, batch_size=batch_size)
    options = EvalOptions(split=split, batch_size=batch_size or site.run.batch_size,
                          workers=workers or site.run.workers, rules=site.selection, bootstrap=bootstrap, seed=seed)
    from screen.nightly.progress import progress as show_progress

    return evaluate(source, out_dir, members=members, operating_point=point, labels_csv=labels_csv,
                    options=options, progress=show_progress if progress else None)


def summary_lines(result: "EvalResult") -> list[str]:
    """The closing table: each model's study metrics, then each detector's box metrics."""
    from train.eval_report import format_number as f
    from train.evaluate import UNTUNED_NOTE, UNTUNED_POINT_ID

    width = max([14] + [len(r.name) for r in result.rows] + [len(b.name) for b in result.boxes])
    lines = [f"{result.n_studies} studies ({result.n_positive} fracture), {result.n_images} images, "
             f"{result.failed_studies} failed; operating point {result.operating_point_id}"
             + (f" ({UNTUNED_NOTE})" if result.operating_point_id == UNTUNED_POINT_ID else ""),
             f"{'model':<{width}} {'accuracy':>8} {'precision':>9} {'recall':>7} {'F1':>6} {'AUC':>6}"]
    for row in result.rows:
        c = row.confusion
        auc = row.auc.value if row.auc else None
        lines.append(f"{row.name:<{width}} {f(c.accuracy):>8} {f(c.precision):>9} {f(c.recall):>7} {f(c.f1):>6} "
                     f"{f(auc):>6}")
    if result.boxes:
        lines.append(f"{'boxes':<{width}} {'F1@0.5':>8} {'mean IoU':>9} {'@0.3':>7} {'mAP':>6}")
        for b in result.boxes:
            lines.append(f"{b.name:<{width}} {f(b.at_50.f1):>8} {f(b.at_50.mean_iou):>9} {f(b.recall_30):>7} "
                         f"{f(b.map):>6}")
    return lines


@click.command("eval")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Labels CSV (required for a DICOM archive; a prepared data folder carries its own).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Site config TOML naming the members (default: the demo members in sample_data/site.toml).")
@click.option("--operating-point", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Operating point JSON in place of the config's.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("eval-out"),
              show_default=True, help="Folder for predictions.csv, image_predictions.csv, report.md, metrics.json.")
@click.option("--split", type=click.Choice(SPLIT_CHOICES), default="test", show_default=True,
              help="Split of a prepared data folder to evaluate.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Images per forward pass (config [run] batch_size).")
@click.option("--workers", type=click.IntRange(min=1), help="Decode processes for an archive (config [run] workers).")
@click.option("--device", help="Torch device for the members, e.g. cpu, cuda.")
@click.option("--bootstrap", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Bootstrap resamples of the AUC confidence intervals (0: none).")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
def eval_cmd(source: Path, labels_csv: Path | None, config_path: Path | None, operating_point: Path | None,
             out_dir: Path, split: str, batch_size: int | None, workers: int | None, device: str | None,
             bootstrap: int, seed: int) -> None:
    """Measure every member and the fused ensemble on SOURCE: a prepared data folder or a
    labelled DICOM archive.

    Writes the paper's table (accuracy, precision, recall, F1 per member and for the ensemble,
    with study AUC), box metrics (F1 at IoU 0.5, mean IoU, COCO mAP, share of true boxes matched
    at IoU >= 0.3) and predictions.csv, the per-study scores `screen tune` reads.
    """
    result = run_eval(source, out_dir, labels_csv=labels_csv, config_path=config_path,
                      operating_point=operating_point, split=split, batch_size=batch_size, workers=workers,
                      device=device, bootstrap=bootstrap, seed=seed, progress=True)
    for line in summary_lines(result):
        click.echo(line)
    click.echo(f"wrote {', '.join(p.name for p in result.files.values())} to {out_dir}")
