"""Errors of the screener. Only :mod:`screen.cli` turns domain errors into exit codes."""

from __future__ import annotations

from dicom_io.errors import DicomIOError

#: Exit codes the CLI documents (README "Exit codes").
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


class ScreenError(Exception):
    """Base of the screener's own errors; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_USAGE


class ConfigError(ScreenError):
    """The site config or a command option is invalid; the message names the key and the fix."""


class OutputLockedError(ScreenError):
    """Another run holds the output folder."""


class EnvironmentProblem(ScreenError):
    """The machine stopped the run (a read-only or full output folder, a lost disk): one clear
    line, exit 2, or 1 when some studies were done and recorded before it."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def domain_errors() -> tuple[type[Exception], ...]:
    """Every error family the CLI converts to a clean message (ensembles only when importable)."""
    families: list[type[Exception]] = [ScreenError, DicomIOError]
    try:
        from ensembles.errors import EnsembleError
    except ImportError:  # pragma: no cover - ensembles is part of the distribution
        pass
    else:
        families.append(EnsembleError)
    try:
        from train.errors import TrainError
    except ImportError:  # pragma: no cover - train is part of the distribution
        pass
    else:
        families.append(TrainError)
    return tuple(families)
