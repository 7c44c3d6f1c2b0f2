"""Reading the per-study predictions file that ``screen eval`` writes and ``screen tune`` reads.

``predictions.csv``: one row per study; columns ``study_instance_uid``, ``label``
(``fracture`` | ``normal``), ``n_images``, one ``score:<member>`` per member (the member's study
score in [0, 1], the max over the study's images; empty when the member gave nothing), and
optionally ``fused_score`` and ``split``. Other columns are ignored.

Every problem is refused with the file, the line and the column named, since a tuned operating
point is only as good as the file it was tuned on.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from screen.errors import ScreenError

__all__ = ["LABELS", "SCORE_PREFIX", "Predictions", "TuneError", "read_predictions"]

SCORE_PREFIX = "score:"
#: Label values: ``fracture`` is the positive class.
LABELS = ("fracture", "normal")
_REQUIRED = ("study_instance_uid", "label", "n_images")


class TuneError(ScreenError):
    """``screen tune`` cannot produce an honest operating point; the message says why and what
    to do."""


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


def _score(text: str, where: str, column: str) -> float:
    if not text.strip():
        return math.nan
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also refuses nan/inf written as text
        raise TuneError(f"{where}: column {column!r} must be a number in [0, 1] or empty, "
                        f"got {text!r}; re-run `screen eval` to rewrite the file")
    return value


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
    with file.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        lacking = [c for c in _REQUIRED if c not in columns]
        if lacking:
            raise TuneError(
                f"predictions file {str(file)!r} lacks column(s) {', '.join(lacking)} "
                f"(it has: {', '.join(columns) or 'nothing'}); use the file `screen eval` writes"
            )
        score_cols = [c for c in columns if c.startswith(SCORE_PREFIX)]
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
        seen: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            where = f"{file}, line {line}"
            if None in row:
                raise TuneError(f"{where}: more fields than the header's {len(columns)}")
            if split is not None and row.get("split") != split:
                continue
            uid = (row["study_instance_uid"] or "").strip()
            if not uid:
                raise TuneError(f"{where}: column 'study_instance_uid' is empty")
            if uid in seen:
                raise TuneError(f"{where}: study {uid!r} already appeared on line {seen[uid]}; "
                                "one row per study")
            seen[uid] = line
            label = (row["label"] or "").strip().lower()
            if label not in LABELS:
                raise TuneError(f"{where}: column 'label' must be 'fracture' or 'normal', "
                                f"got {row['label']!r}")
            count = (row["n_images"] or "").strip()
            if count and not count.isdigit():
                raise TuneError(f"{where}: column 'n_images' must be a count >= 0, got {count!r}")
            uids.append(uid)
            labels.append(label == "fracture")
            images.append(int(count) if count else None)
            rows.append([_score(row[SCORE_PREFIX + m] or "", where, SCORE_PREFIX + m)
                         for m in chosen])
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
        n_images=tuple(images),
    )
