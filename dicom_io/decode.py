"""Decoding one file in a worker process: the picklable task and the function the pool runs.

The night (``screen.nightly.runner``), ``screen scan --decode``, ``train prepare`` and the eval
sources all decode through :func:`decode_one`, so a file is turned into a
:class:`~dicom_io.pixels.Radiograph` one way everywhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dicom_io.pixels import PixelPolicy, Radiograph, load_radiograph

__all__ = ["DecodeSummary", "DecodeTask", "decode_check", "decode_one"]


@dataclass(frozen=True)
class DecodeTask:
    """A picklable request to decode one instance with a policy."""

    path: Path
    policy: PixelPolicy


def decode_one(task: DecodeTask) -> Radiograph:
    """Decode one file into a :class:`Radiograph` (runs in a worker)."""
    return load_radiograph(task.path, task.policy)


@dataclass(frozen=True)
class DecodeSummary:
    """What a decode check keeps of a radiograph (the pixels stay in the worker)."""

    voi_source: str
    decode_ms: float


def decode_check(task: DecodeTask) -> DecodeSummary:
    """Decode one file and keep only its VOI source and decode time (``screen scan --decode``)."""
    start = time.perf_counter()
    radiograph = decode_one(task)
    return DecodeSummary(radiograph.voi_source, (time.perf_counter() - start) * 1000.0)
