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
from screen.errors import EXIT_USAGE, ScreenError, environment_detail, is_environment_error

F = TypeVar("F", bound=Callable[..., Any])


class _DomainError(click.ClickException):
    """A domain error as Click prints it: ``Error: <message>``, with the error's exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class


class _DomainErrorGroup(click.Group):
    """Turns every :class:`ScreenError` into ``Error: ...`` and its exit code: the one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ScreenError as exc:
            raise _DomainError(str(exc), exc.exit_code) from exc
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


def _add_commands() -> None:
    """Commands that live in their own modules (imported here, at start-up, cheaply)."""
    from screen.commands.demo import train_demo_cmd
    from screen.commands.eval import eval_cmd
    from screen.commands.ledger import ledger_cmd
    from screen.commands.models import models_cmd
    from screen.commands.phantom import phantom_cmd
    from screen.commands.prepare import prepare_cmd
    from screen.commands.report import report_cmd
    from screen.commands.run import run_cmd
    from screen.commands.scan import scan_cmd
    from screen.commands.train import train_cmd
    from screen.commands.tune import tune_cmd
    from screen.commands.monitor import monitor_cmd

    for command in (scan_cmd, phantom_cmd, run_cmd, tune_cmd, prepare_cmd, train_cmd, eval_cmd, models_cmd,
                    train_demo_cmd, ledger_cmd, report_cmd):
        cli.add_command(command)
    cli.add_command(monitor_cmd)


_add_commands()


def main() -> None:
    """Console-script entry point (``screen`` and ``fracture-screen``)."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    cli(prog_name=name if name in ("screen", "fracture-screen") else "screen")
