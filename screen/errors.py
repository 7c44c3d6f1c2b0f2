"""Errors of the screener. Only :mod:`screen.cli` turns domain errors into exit codes."""

from __future__ import annotations

import errno
import sqlite3

from ensembles.errors import EXIT_USAGE, ScreenError

#: Exit codes the CLI documents (README "Exit codes").
EXIT_OK, EXIT_SOME_FAILED = 0, 1

__all__ = ["EXIT_OK", "EXIT_SOME_FAILED", "EXIT_USAGE", "ConfigError", "EnvironmentProblem",
           "OutputLockedError", "ReportError", "ScreenError", "environment_detail", "is_environment_error"]


class ConfigError(ScreenError):
    """The site config or a command option is invalid; the message names the key and the fix."""


class OutputLockedError(ScreenError):
    """Another run holds the output folder."""


class ReportError(ScreenError):
    """The morning page cannot be built from an output folder (no run.json, unreadable tables)."""


class EnvironmentProblem(ScreenError):
    """The machine stopped the run (a read-only or full output folder, a lost disk): one clear
    line, exit 2, or 1 when some studies were done and recorded before it."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


_ENVIRONMENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO})
_ENVIRONMENT_SQLITE = ("readonly", "disk is full", "disk i/o error", "unable to open database")


def is_environment_error(exc: BaseException) -> bool:
    """A read-only, full or failing disk, or missing permissions (not a bug or a bad file)."""
    if isinstance(exc, sqlite3.OperationalError):
        return any(part in str(exc).lower() for part in _ENVIRONMENT_SQLITE)
    return isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS


def environment_detail(exc: BaseException) -> str:
    """``No space left on device (ENOSPC)``, or the error's text."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({errno.errorcode.get(exc.errno or 0, exc.errno)})"
    return str(exc)
