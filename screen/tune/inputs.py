"""What ``screen tune`` reads: the per-study predictions file ``screen eval`` writes, and the
settings (:class:`TuneSettings`, one field per CLI option).

``predictions.csv``: one row per study; columns ``study_instance_uid``, ``label``
(``fracture`` | ``normal``), ``n_images``, one ``score:<member>`` per member (the member's study
score in [0, 1], the max over the study's images; empty when the member gave nothing), and
optionally ``fused_score`` and ``split``. Other columns are ignored. The columns, their types
and ranges are :data:`dicom_io.tables.PREDICTIONS`, the schema ``screen eval`` writes with.

Every problem is refused with the file, the line and the column named, since a tuned operating
point is only as good as the file it was tuned on.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from dicom_io.tables import ACQUISITION_COLUMNS, PREDICTIONS, read_table, records
from ensembles.operating_point.calibration import CALIBRATION_METHODS
from ensembles.operating_point.point import GROUP_FIELDS, GUARDS
from screen.errors import ConfigError, ScreenError
from screen.tune.search import OBJECTIVES, RULE_FAMILIES

__all__ = [
    "CALIBRATE_CHOICES", "GROUP_COLUMNS", "GUARDS", "HIGH_SENSITIVITY", "HIGH_SPECIFICITY", "LABELS", "MIN_BOOTSTRAP", "REPORTED",
    "SCORE_PREFIX", "Predictions", "TuneError", "TuneSettings", "read_predictions",
]

HIGH_SENSITIVITY, HIGH_SPECIFICITY = "high-sensitivity", "high-specificity"
#: Figures reported (with intervals) at every point.
REPORTED: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv", "f1")
MIN_BOOTSTRAP = 2000
#: ``--calibrate`` values: a method, or ``none``.
CALIBRATE_CHOICES: tuple[str, ...] = (*CALIBRATION_METHODS, "none")
#: The ``predictions.csv`` column of each ``--by`` field.
GROUP_COLUMNS: dict[str, str] = {"BodyPartExamined": "body_part", "Manufacturer": "manufacturer",
                                 "ManufacturerModelName": "model", "Modality": "modality"}
SCORE_PREFIX = "score:"
#: Label values: ``fracture`` is the positive class.
LABELS: tuple[str, ...] = next(c.choices for c in PREDICTIONS.columns if c.name == "label")


class TuneError(ScreenError):
    """``screen tune`` cannot produce an honest operating point; the message says why and what
    to do."""


@dataclass(frozen=True)
class TuneSettings:
    """What ``screen tune`` aims for (each field is a CLI option of the same name).

    Attributes:
        target_recall: study-level sensitivity the decision point must reach, in (0, 1].
        objective: what to maximise under it: precision, specificity, f1 or youden.
        rules: rule families to search: any, k-of-n, weighted-mean.
        dual: also choose a high-specificity point.
        target_specificity: specificity the high-specificity point must reach (``dual``).
        folds: stratified folds of the out-of-fold estimate (0 skips it).
        n_bootstrap: bootstrap resamples of the F1 interval (>= 2,000).
        seed: seed of the folds and the bootstrap.
        weight_step: simplex grid step of weighted-mean weights.
        max_combinations: cap on enumerated threshold combinations (see tune_search).
        guard: what the decision point must meet beyond its in-sample sensitivity: ``oof``,
            ``lower-ci`` or ``none`` (see the module docstring).
        allow_small: tune a set with too few fracture studies to show the target anyway.
        calibrate: ``platt`` (default), ``isotonic`` or ``none``: the calibration maps stored
            with the deciding point (:mod:`screen.tune.calibrate`).
        group_by: a header field (``BodyPartExamined`` ...): one decision point per group with
            at least ``min_group_positives`` fracture studies, the global point the fallback.
        min_group_positives: fracture studies a group needs for its own point (``None``: the
            fewest that can show the target, :func:`~screen.tune.search.positives_needed`).
        stability: with guard ``oof``, run the guard again under this many other fold seeds
            (``seed + 1`` ...) and report which rule each chooses (0: not checked).
    """

    target_recall: float = 0.9
    objective: str = "precision"
    rules: tuple[str, ...] = RULE_FAMILIES
    dual: bool = False
    target_specificity: float = 0.9
    folds: int = 5
    n_bootstrap: int = MIN_BOOTSTRAP
    seed: int = 0
    weight_step: float = 0.1
    max_combinations: int = 50_000
    guard: str = "oof"
    allow_small: bool = False
    calibrate: str = "platt"
    group_by: str | None = None
    min_group_positives: int | None = None
    stability: int = 0

    def __post_init__(self) -> None:
        t = self.target_recall
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1:
            raise ConfigError(f"--target-recall must be in (0, 1], e.g. 0.90; got {t!r}")
        s = self.target_specificity
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= 1:
            raise ConfigError(f"--target-specificity must be in (0, 1], e.g. 0.90; got {s!r}")
        choices = OBJECTIVES[:4]
        if self.objective not in choices:
            raise ConfigError(
                f"--objective {self.objective!r} is unknown; choose one of {', '.join(choices)}"
            )
        rules = tuple(self.rules)
        bad = [r for r in rules if r not in RULE_FAMILIES]
        if bad or not rules:
            raise ConfigError(f"--rules {','.join(rules)!r} is invalid; give a comma-separated "
                              f"subset of {','.join(RULE_FAMILIES)}")
        object.__setattr__(self, "rules", rules)
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds == 1 \
                or self.folds < 0:
            raise ConfigError(f"--folds must be 0 (skip the out-of-fold estimate) or >= 2, "
                              f"got {self.folds!r}")
        if not isinstance(self.n_bootstrap, int) or self.n_bootstrap < MIN_BOOTSTRAP:
            raise ConfigError(f"--bootstrap must be at least {MIN_BOOTSTRAP} resamples, "
                              f"got {self.n_bootstrap!r}")
        if self.max_combinations < 1:
            raise ConfigError(f"--max-combinations must be >= 1, got {self.max_combinations!r}")
        parts = round(1.0 / self.weight_step) if self.weight_step > 0 else 0
        if parts < 1 or parts > 100 or not math.isclose(parts * self.weight_step, 1.0):
            raise ConfigError(f"--weight-step must divide 1 into at most 100 steps (e.g. 0.1, "
                              f"0.25), got {self.weight_step!r}")
        if self.guard not in GUARDS:
            raise ConfigError(f"--guard {self.guard!r} is unknown; choose one of "
                              f"{', '.join(GUARDS)}")
        if not isinstance(self.allow_small, bool):
            raise ConfigError(f"--allow-small is a flag (true or false), got {self.allow_small!r}")
        if isinstance(self.stability, bool) or not isinstance(self.stability, int) or self.stability < 0:
            raise ConfigError(f"--stability must be a count >= 0, got {self.stability!r}")
        if self.stability and (self.guard != "oof" or self.folds < 2):
            raise ConfigError("--stability checks how the oof guard's choice moves with the folds; "
                              "it needs --guard oof and --folds >= 2")
        if self.calibrate not in CALIBRATE_CHOICES:
            raise ConfigError(f"--calibrate {self.calibrate!r} is unknown; choose one of "
                              f"{', '.join(CALIBRATE_CHOICES)}")
        if self.group_by is not None and self.group_by not in GROUP_FIELDS:
            raise ConfigError(f"--by {self.group_by!r} is not a field studies can be grouped by; "
                              f"choose one of {', '.join(GROUP_FIELDS)}")
        m = self.min_group_positives
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ConfigError(f"--min-group-positives must be an integer >= 1, got {m!r}")
        if self.guard == "oof" and not self.folds:
            raise ConfigError("--guard oof needs the out-of-fold estimate, but --folds is 0; "
                              "give --folds >= 2 (default 5), or choose --guard lower-ci or "
                              "--guard none")


@dataclass(frozen=True)
class Predictions:
    """Per-study member scores and truth, as read from a predictions file.

    Attributes:
        study_uids: StudyInstanceUID per row.
        labels: ``True`` for a fracture study.
        members: member names, in column order.
        scores: ``(studies, members)`` scores; ``nan`` where the member gave nothing.
        source: the file read (``None`` when built in memory).
        sha256: SHA-256 of the file's bytes.
        split: the ``split`` value kept (``None``: all rows).
    """

    study_uids: tuple[str, ...]
    labels: NDArray[np.bool_]
    members: tuple[str, ...]
    scores: NDArray[np.float64]
    source: Path | None = None
    sha256: str | None = None
    split: str | None = None
    n_images: tuple[int | None, ...] = field(default=())
    acquisition: tuple[dict[str, str], ...] = field(default=())  # per row: ACQUISITION_COLUMNS

    def group_values(self, column: str) -> tuple[str, ...]:
        """Each study's value of an acquisition column (``""`` where the file has none)."""
        if not self.acquisition:
            return ("",) * len(self.study_uids)
        return tuple(row.get(column, "") for row in self.acquisition)

    def subset(self, rows: NDArray[np.intp]) -> "Predictions":
        """The studies at ``rows`` (same members, source and hash)."""
        picked = [int(i) for i in rows]
        return Predictions(
            study_uids=tuple(self.study_uids[i] for i in picked), labels=self.labels[picked],
            members=self.members, scores=self.scores[picked], source=self.source, sha256=self.sha256,
            split=self.split, n_images=tuple(self.n_images[i] for i in picked) if self.n_images else (),
            acquisition=tuple(self.acquisition[i] for i in picked) if self.acquisition else (),
        )

    def __post_init__(self) -> None:
        n = len(self.study_uids)
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {self.labels.shape}")
        if self.scores.shape != (n, len(self.members)):
            raise ValueError(
                f"scores must have shape ({n}, {len(self.members)}), got {self.scores.shape}"
            )

    @property
    def positives(self) -> int:
        """Fracture studies."""
        return int(self.labels.sum())

    @property
    def negatives(self) -> int:
        """Normal studies."""
        return int(self.labels.size - self.labels.sum())

    def empty_counts(self) -> dict[str, int]:
        """``{member: studies without a score}`` for members with any empty cell."""
        counts = np.isnan(self.scores).sum(axis=0)
        return {m: int(c) for m, c in zip(self.members, counts) if c}

    def filled(self, members: Sequence[str] | None = None) -> NDArray[np.float64]:
        """Scores of ``members`` (default all) with empty cells counted as 0.0 (no suspicion).

        A member that gave nothing for a study cannot have seen a fracture there; 0.0 never
        reaches a threshold above 0 and pulls a weighted mean down, as a missing vote should.
        """
        cols = [self.members.index(m) for m in (members or self.members)]
        return np.nan_to_num(self.scores[:, cols], nan=0.0)


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_predictions(
    path: str | Path, *, split: str | None = None, members: Sequence[str] | None = None,
) -> Predictions:
    """Read and validate a predictions file.

    Args:
        path: the CSV written by ``screen eval``.
        split: keep only rows whose ``split`` column equals this (``None``: every row).
        members: members to keep, in this order (``None``: every ``score:`` column).

    Raises:
        TuneError: the file is missing or malformed (the message names the line and column),
            a requested member has no column, a member has no score at all, or no row is left.
    """
    file = Path(path)
    if not file.is_file():
        raise TuneError(f"predictions file {str(file)!r} does not exist; write it with "
                        "`screen eval ... --out DIR` (DIR/predictions.csv)")
    frame = read_table(file, PREDICTIONS, error=TuneError)
    columns = [str(c) for c in frame.columns]
    score_cols = [c for c in columns if PREDICTIONS.column(c) is not None and c.startswith(SCORE_PREFIX)]
    available = [c[len(SCORE_PREFIX):] for c in score_cols]
    if not available:
        raise TuneError(f"predictions file {str(file)!r} has no member score columns "
                        f"({SCORE_PREFIX}<member>); columns: {', '.join(columns)}")
    chosen = list(members) if members else available
    for name in chosen:
        if name not in available:
            raise TuneError(
                f"predictions file {str(file)!r} has no column '{SCORE_PREFIX}{name}' for "
                f"member {name!r} that the operating point needs (members in the file: "
                f"{', '.join(available)}); run `screen eval` with that member or leave it "
                "out of --members"
            )
    if split is not None and "split" not in columns:
        raise TuneError(f"--split {split!r} was given but predictions file {str(file)!r} "
                        "has no 'split' column; drop --split")
    uids: list[str] = []
    labels: list[bool] = []
    rows: list[list[float]] = []
    images: list[int | None] = []
    acquisition: list[dict[str, str]] = []
    seen: dict[str, int] = {}
    for line, row in zip(frame.index, records(frame)):
        if split is not None and row.get("split") != split:
            continue
        uid = row["study_instance_uid"].strip()
        if uid in seen:
            raise TuneError(f"{file}, line {line}: study {uid!r} already appeared on line {seen[uid]}; "
                            "one row per study")
        seen[uid] = int(line)
        uids.append(uid)
        labels.append(row["label"] == "fracture")
        images.append(row["n_images"])
        acquisition.append({key: str(row.get(key) or "").strip() for key in ACQUISITION_COLUMNS})
        rows.append([math.nan if row[SCORE_PREFIX + m] is None else row[SCORE_PREFIX + m] for m in chosen])
    if not uids:
        which = f" with split {split!r}" if split is not None else ""
        raise TuneError(f"predictions file {str(file)!r} has no study rows{which}")
    scores = np.array(rows, dtype=np.float64).reshape(len(uids), len(chosen))
    for j, name in enumerate(chosen):
        if np.isnan(scores[:, j]).all():
            raise TuneError(f"member {name!r} has no score in any row of {str(file)!r}; "
                            "leave it out of --members or re-run `screen eval` with it working")
    return Predictions(
        study_uids=tuple(uids), labels=np.array(labels, dtype=bool), members=tuple(chosen),
        scores=scores, source=file, sha256=_file_hash(file), split=split,
        n_images=tuple(images), acquisition=tuple(acquisition),
    )
