"""The archive's plan: which studies are positive, who the patients are, which views exist,
and how each file is stored, before any pixel is drawn.

Shares that matter for tests and balance (positive studies, compression, MONOCHROME1) are
allocated as exact rounded counts and then shuffled, so even a small archive has them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dicom_io.phantom.config import COMPRESSION_KINDS, PhantomConfig


@dataclass(frozen=True)
class ViewPlan:
    """One image: whether it shows a fracture and how it is stored."""

    positive: bool
    compression: str
    monochrome1: bool


@dataclass(frozen=True)
class StudyPlan:
    """One study: its index, its patient's index and its views."""

    index: int
    patient: int
    views: tuple[ViewPlan, ...]

    @property
    def positive(self) -> bool:
        """A study is positive when any of its images shows a fracture."""
        return any(view.positive for view in self.views)


def allocate(rng: np.random.Generator, n: int, shares: tuple[float, ...]) -> list[int]:
    """Exactly rounded counts for ``shares`` of ``n`` items, as a shuffled list of indices.

    Largest-remainder rounding keeps the counts summing to ``n``.
    """
    raw = [share * n for share in shares]
    counts = [int(np.floor(r)) for r in raw]
    order = sorted(range(len(shares)), key=lambda k: (counts[k] - raw[k], k))
    for k in order[: n - sum(counts)]:
        counts[k] += 1
    labels = np.repeat(np.arange(len(shares)), counts)
    return [int(x) for x in rng.permutation(labels)]


def plan_archive(config: PhantomConfig) -> list[StudyPlan]:
    """Draw the structure of the whole archive from ``config.seed``."""
    rng = np.random.default_rng([config.seed, 0])
    n = config.n_studies
    positive_studies = allocate(rng, n, (1.0 - config.positive_fraction, config.positive_fraction))

    patients: list[int] = []
    next_patient = 0
    for i in range(n):
        if i > 0 and rng.random() < config.repeat_patient_fraction:
            patients.append(patients[int(rng.integers(i))])
        else:
            patients.append(next_patient)
            next_patient += 1

    low, high = config.views_range
    view_counts = [int(rng.integers(low, high + 1)) for _ in range(n)]
    positive_views: list[list[bool]] = []
    for i, count in enumerate(view_counts):
        if positive_studies[i] == 1:
            sure = int(rng.integers(count))
            positive_views.append(
                [j == sure or bool(rng.random() < config.fracture_visible_fraction) for j in range(count)]
            )
        else:
            positive_views.append([False] * count)

    total = sum(view_counts)
    kinds = allocate(rng, total, config.compression_mix)
    inverted = allocate(rng, total, (1.0 - config.monochrome1_fraction, config.monochrome1_fraction))
    plans: list[StudyPlan] = []
    flat = 0
    for i, flags in enumerate(positive_views):
        views = []
        for flag in flags:
            views.append(ViewPlan(flag, COMPRESSION_KINDS[kinds[flat]], inverted[flat] == 1))
            flat += 1
        plans.append(StudyPlan(index=i, patient=patients[i], views=tuple(views)))
    return plans
