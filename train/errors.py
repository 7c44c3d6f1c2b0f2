"""Errors raised by :mod:`train`; only the CLI turns them into exit codes."""

from __future__ import annotations

from ensembles.errors import ScreenError


class TrainError(ScreenError):
    """Base of every error raised by :mod:`train`."""


class TrainConfigError(TrainError):
    """A training config file or value is invalid; the message names the key and the fix."""


class RecipeError(TrainError):
    """A training recipe is unknown, registered twice, or cannot run with its config/data."""


class NonFiniteLossError(TrainError):
    """Training produced a NaN or infinite loss; the run stops instead of corrupting weights."""
