"""Patient-level train/val/test splits, stratified by label and seeded.

Why by patient: two studies of one patient share anatomy, hardware and often the very fracture;
a model that saw one in training and is judged on the other is judged on memory. So every
patient lands in exactly one split. Why stratified: a small validation set without positives
cannot select a checkpoint by F1. A patient counts as positive when any of their studies is.

The split depends only on the set of patients, their labels, the fractions and the seed: the
patients are sorted, then each stratum is shuffled by ``numpy.random.default_rng(seed)``. The
hashed ``patient_key`` written to the data (never the PatientID) uses a salt that does not
change the split.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from collections.abc import Mapping

import numpy as np

from train.errors import TrainError

__all__ = ["SPLITS", "SALT_ENV", "DEFAULT_SALT", "SplitError", "check_fractions", "patient_key", "split_patients"]

SPLITS: tuple[str, str, str] = ("train", "val", "test")
#: Environment variable holding the salt of :func:`patient_key` (set it for real data).
SALT_ENV = "FRACTURE_SCREEN_SALT"
#: The salt used when none is given: fine for phantoms, too guessable for real PatientIDs.
DEFAULT_SALT = "fracture-screen-prepare"


class SplitError(TrainError, ValueError):
    """Split fractions or inputs are invalid."""


def check_fractions(val: float, test: float) -> tuple[float, float]:
    """Validate the validation and test fractions (each in ``[0, 1)``, together below 1)."""
    for name, value in (("val", val), ("test", test)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SplitError(f"--{name} must be a number in [0, 1), got {value!r}")
        if not 0.0 <= value < 1.0:
            raise SplitError(f"--{name} must be in [0, 1), got {value!r}")
    if val + test >= 1.0:
        raise SplitError(
            f"--val + --test must leave patients for training (sum < 1), got {val} + {test}"
        )
    return float(val), float(test)


def patient_key(patient_id: str, salt: str | None = None) -> str:
    """A stable pseudonym of a PatientID: HMAC-SHA256 with the salt, 16 hex digits.

    The salt comes from the argument, else ``$FRACTURE_SCREEN_SALT``, else :data:`DEFAULT_SALT`.
    """
    key = salt if salt is not None else os.environ.get(SALT_ENV, DEFAULT_SALT)
    return hmac.new(key.encode(), patient_id.encode(), hashlib.sha256).hexdigest()[:16]


def _counts(n: int, val: float, test: float) -> tuple[int, int]:
    n_test = round(n * test)
    n_val = round(n * val)
    overflow = n_test + n_val - n
    if overflow > 0:  # only possible for tiny n; keep the test set whole first
        n_val = max(0, n_val - overflow)
    return n_val, n_test


def split_patients(
    positive: Mapping[str, bool], *, val: float = 0.15, test: float = 0.15, seed: int = 0
) -> dict[str, str]:
    """Assign each patient to ``train``, ``val`` or ``test``.

    Args:
        positive: ``{patient: any study positive}``; the keys may be raw PatientIDs (they are
            only sorted, never written).
        val: share of each stratum's patients for validation (rounded per stratum).
        test: share of each stratum's patients for testing (rounded per stratum).
        seed: the shuffle's seed.

    Returns:
        ``{patient: split name}``.
    """
    val, test = check_fractions(val, test)
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    for stratum in (True, False):
        members = sorted(p for p, flag in positive.items() if bool(flag) is stratum)
        order = [members[i] for i in rng.permutation(len(members))]
        n_val, n_test = _counts(len(order), val, test)
        for index, patient in enumerate(order):
            if index < n_test:
                out[patient] = "test"
            elif index < n_test + n_val:
                out[patient] = "val"
            else:
                out[patient] = "train"
    return out
