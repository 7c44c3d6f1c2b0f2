"""The ``screen`` command line: thin Click commands over library functions.

Exit codes: 0 the command completed (bad files are rows, not errors); 1 some studies failed
(``screen run``); 2 usage or configuration errors, with a message naming the problem.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from screen import __version__
from screen.errors import EXIT_USAGE, domain_errors, environment_detail, is_environment_error

F = TypeVar("F", bound=Callable[..., Any])


class _DomainError(click.ClickException):
    """A domain error as Click prints it: ``Error: <message>``, with the error's exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class


class _DomainErrorGroup(click.Group):
    """Turns the project's domain errors into ``Error: ...`` and their exit code, once."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except domain_errors() as exc:
            raise _DomainError(str(exc), getattr(exc, "exit_code", EXIT_USAGE)) from exc
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - never a traceback on the console or the nightly log
            if is_environment_error(exc):
                where = f" {getattr(exc, 'filename', None)}" if getattr(exc, "filename", None) else ""
                raise _DomainError(f"cannot write{where}: {environment_detail(exc)}; make it writable by "
                                   "this user and free space, then run the command again", EXIT_USAGE) from exc
            report = _crash_report(exc)
            raise _DomainError(
                f"unexpected {type(exc).__name__}: a bug in fracture-screen, not in your data or "
                f"config; the details are in {report} (readable by you only): please report it",
                EXIT_USAGE,
            ) from exc


def _crash_report(exc: BaseException) -> Path:
    """The traceback in a private file (it may quote values a log must not hold)."""
    import os
    import tempfile
    import traceback

    fd, name = tempfile.mkstemp(prefix="fracture-screen-crash-", suffix=".txt")  # mode 0600
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(f"fracture-screen {__version__}\n")
        handle.write("".join(traceback.format_exception(exc)))
    return Path(name)


@click.group(cls=_DomainErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fracture-screen")
def cli() -> None:
    """fracture-screen: nightly AI fracture screening of DICOM radiograph archives."""


@cli.command("scan")
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
    from screen.scan import run_scan, summary_table

    rules_args: dict[str, Any] = {"body_parts": body_parts, "allow_burned_in": allow_burned_in}
    if modalities:
        rules_args["modalities"] = modalities
    result, csv_path = run_scan(path, out_dir, decode=decode, workers=workers, rules=SelectionRules(**rules_args))
    click.echo(summary_table(result))
    click.echo(f"wrote {csv_path}")


@cli.command("phantom")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--labels", "labels_csv", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the labels CSV (keep it outside OUT_DIR).")
@click.option("--studies", type=click.IntRange(min=1), default=24, show_default=True, help="Number of studies.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed; the same seed regenerates the same bytes.")
@click.option("--positive-fraction", type=click.FloatRange(0.0, 1.0), default=0.4, show_default=True,
              help="Share of studies with a fracture.")
@click.option("--overwrite", is_flag=True,
              help="Write into a non-empty OUT_DIR, deleting .dcm files this config does not produce.")
def phantom_cmd(out_dir: Path, labels_csv: Path, studies: int, seed: int, positive_fraction: float,
                overwrite: bool) -> None:
    """Write a synthetic phantom archive (PHANTOM.md) and its labels CSV, bit for bit from SEED."""
    from dicom_io.phantom import PhantomConfig, write_phantom_archive

    config = PhantomConfig(n_studies=studies, seed=seed, positive_fraction=positive_fraction)
    s = write_phantom_archive(out_dir, labels_csv, config, overwrite=overwrite)
    click.echo(
        f"wrote {s.n_images} images in {s.n_studies} studies of {s.n_patients} patients "
        f"({s.n_positive_studies} positive studies, {s.n_boxes} boxes), {s.total_bytes / 1e6:.1f} MB, to {s.out_dir}"
    )
    click.echo(f"labels: {s.labels_csv}")


def _add_commands() -> None:
    """Commands that live in their own modules (imported here, at start-up, cheaply)."""
    from screen.demo_cmd import train_demo_cmd
    from screen.eval_cmd import eval_cmd
    from screen.ledger_cmd import ledger_cmd
    from screen.models_cmd import models_cmd
    from screen.prepare_cmd import prepare_cmd
    from screen.run_cmd import run_cmd
    from screen.train_cmd import train_cmd
    from screen.tune_cmd import tune_cmd

    for command in (run_cmd, tune_cmd, prepare_cmd, train_cmd, eval_cmd, models_cmd, train_demo_cmd, ledger_cmd):
        cli.add_command(command)


_add_commands()


def main() -> None:
    """Console-script entry point (``screen`` and ``fracture-screen``)."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    cli(prog_name=name if name in ("screen", "fracture-screen") else "screen")
