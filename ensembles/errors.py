"""Errors raised by :mod:`ensembles`; only the CLI turns them into exit codes."""

from __future__ import annotations


class EnsembleError(Exception):
    """Base of every error raised by :mod:`ensembles`."""


class MemberUnavailableError(EnsembleError):
    """A member cannot run on this machine (missing package, no GPU for its quantisation, ...)."""


class CheckpointError(EnsembleError):
    """A member checkpoint directory is missing, incomplete or inconsistent."""


class OperatingPointError(EnsembleError):
    """An operating point JSON is missing, malformed or does not fit the members."""
