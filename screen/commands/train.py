"""``screen train {classifier,detector,detr,refiner} --config FILE``: train one ensemble member.

A thin command over :func:`run_train`, which a test or a notebook can call without Click. The
recipe named on the command line is looked up in :mod:`train.recipes` (imported lazily: torch
loads only when a training actually starts). Training errors become :class:`TrainFailedError`
(a :class:`~screen.errors.ScreenError`), so the CLI prints ``Error: <message>`` and exits 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import click

from screen.errors import ScreenError
from train.recipes import RECIPE_MODULES, get_recipe

logger = logging.getLogger(__name__)


class TrainFailedError(ScreenError):
    """A training run could not start or stopped (bad config, data, non-finite loss...)."""


def run_train(
    member: str,
    config_path: str | Path,
    *,
    data: str | Path | None = None,
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    resume: bool | None = None,
) -> Path:
    """Load the config, apply the command-line overrides and run the member's recipe.

    Args:
        member: ``classifier``, ``detector``, ``detr`` or ``refiner``.
        config_path: the TOML training config.
        data: replaces the config's ``data``.
        out: replaces the config's ``out``.
        overrides: ``section.key=value`` strings (values read as TOML).
        resume: replaces ``[train] resume`` when not ``None``.

    Returns:
        The best checkpoint's directory (a member checkpoint the screener loads).

    Raises:
        TrainFailedError: the config, data or run failed; the message says what to fix.
    """
    from train.train_config import load_train_config, parse_override
    from train.errors import TrainError

    try:
        values: dict[str, Any] = dict(parse_override(text) for text in overrides)
        if data is not None:
            values["data"] = str(data)
        if out is not None:
            values["out"] = str(out)
        if resume is not None:
            values["train.resume"] = resume
        config = load_train_config(config_path, recipe=member, overrides=values)
        recipe = get_recipe(member)
        return recipe(config)
    except TrainError as exc:
        raise TrainFailedError(str(exc)) from exc


def _show_progress_logs() -> None:
    """Epoch lines from the engine on stderr, unless the caller configured logging itself."""
    train_logger = logging.getLogger("train")
    if not train_logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        train_logger.addHandler(handler)
        train_logger.setLevel(logging.INFO)


@click.command("train")
@click.argument("member", type=click.Choice(sorted(RECIPE_MODULES)))
@click.option("--config", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML training config (examples in train/configs/).")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Prepared DATA folder (overrides the config's data).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder (overrides the config's out).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set train.epochs=3 (repeatable).")
@click.option("--resume/--no-resume", default=None,
              help="Continue from OUT/last (default: the config's [train] resume).")
def train_cmd(member: str, config_path: Path, data: Path | None, out: Path | None,
              overrides: tuple[str, ...], resume: bool | None) -> None:
    """Train MEMBER (classifier, detector, detr, refiner) as the config says.

    Writes the run folder: config, metrics.csv per epoch, loss.png and f1.png, last/ (resume
    point) and best/ (the member checkpoint the screener loads).
    """
    _show_progress_logs()
    best = run_train(member, config_path, data=data, out=out, overrides=overrides, resume=resume)
    click.echo(f"best checkpoint: {best}")
