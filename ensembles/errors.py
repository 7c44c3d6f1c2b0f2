"""The project's one error root, and the errors raised by :mod:`ensembles`.

:class:`ScreenError` is the base of every error fracture-screen raises on purpose, in all four
packages (``dicom_io``, ``ensembles``, ``train``, ``screen``): each package subclasses it once
(:class:`EnsembleError`, ``DicomIOError``, ``TrainError``, ``screen.errors.ConfigError`` ...)
and only :mod:`screen.cli` turns it into ``Error: <message>`` and its exit code. It lives here
because ``ensembles`` is the bottom of the import graph (it imports nothing of the project);
this module imports nothing at all, so ``dicom_io`` can import it without torch.
"""

from __future__ import annotations

#: The exit code of a usage, configuration or input error (README "Exit codes").
EXIT_USAGE = 2


class ScreenError(Exception):
    """Base of every error fracture-screen raises on purpose.

    ``exit_code`` is what the command line exits with (2 unless a subclass says otherwise).
    """

    exit_code: int = EXIT_USAGE


class EnsembleError(ScreenError):
    """Base of every error raised by :mod:`ensembles`."""


class MemberUnavailableError(EnsembleError):
    """A member cannot run on this machine (missing package, no GPU for its quantisation, ...)."""


class CheckpointError(EnsembleError):
    """A member checkpoint directory is missing, incomplete or inconsistent."""


class OperatingPointError(EnsembleError):
    """An operating point JSON is missing, malformed or does not fit the members."""
