"""What ``screen tune`` decided and measured: the chosen points and the whole result.

Shared by the tuner (which builds them) and the report (which draws from them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from ensembles.operating_point.point import OperatingPoint, TuneGuard
from screen.tune.inputs import Predictions, TuneSettings
from screen.tune.search import Choice, SearchResult
from screen.tune.votes import MemberVotes, vote_warnings
from train.metrics import Interval


@dataclass(frozen=True)
class TunedPoint:
    """One chosen operating point and its measured figures.

    Attributes:
        level: ``high-sensitivity`` or ``high-specificity``.
        choice: rule, thresholds and tuning-set counts from the search.
        operating_point: what ``screen run`` reads.
        decisions: the point's decision per tuning study.
        in_sample: figures with intervals on the studies it was chosen on.
        out_of_fold: pooled held-out figures (``None`` when folds = 0).
        oof_decisions: pooled held-out decision per study.
        search: the search's summary (exactness, candidates, reachable figures).
        guard: the guard it passed (``none`` for a high-specificity point: chosen in sample),
            its rule's free parameters and what the set could show (op.json's
            ``provenance.guard``).
        votes: each member's votes at the point on the tuning studies (empty for
            ``weighted-mean``; :mod:`screen.tune.votes`).
    """

    level: str
    choice: Choice
    operating_point: OperatingPoint
    decisions: NDArray[np.bool_]
    in_sample: dict[str, Interval]
    out_of_fold: dict[str, Interval] | None
    oof_decisions: NDArray[np.bool_] | None
    search: SearchResult
    guard: TuneGuard
    votes: tuple[MemberVotes, ...] = ()

    @property
    def vote_warnings(self) -> list[str]:
        """What a rubber-stamp or silent member does to the rule (:func:`screen.tune.votes.vote_warnings`)."""
        return vote_warnings(self.votes, self.choice.rule)


@dataclass(frozen=True)
class GroupOutcome:
    """What became of one group.

    Attributes:
        value: the field's value.
        positives: its fracture studies.
        negatives: its normal studies.
        point: its own decision point (``None``: the global point decides it).
        reason: why it has none.
    """

    value: str
    positives: int
    negatives: int
    point: TunedPoint | None
    reason: str = ""


@dataclass(frozen=True)
class TuneResult:
    """Everything ``screen tune`` decided and measured; the report is drawn from it.

    Attributes:
        positives_needed: fewest fracture studies that could show the target (``None``: no
            number can, a target of 1).
        groups: with ``--by``, what became of each group (its point, or why the global one).
        stability: with ``--stability``, ``(fold seed, rule chosen)`` for the tuned seed first,
            then each other seed (``"none passes"`` where the guard found no point).
    """

    predictions: Predictions
    settings: TuneSettings
    points: tuple[TunedPoint, ...]
    members_alone: dict[str, Choice] = field(default_factory=dict)
    positives_needed: int | None = None
    groups: tuple[GroupOutcome, ...] = ()
    stability: tuple[tuple[int, str], ...] = ()

    @property
    def decision_point(self) -> TunedPoint:
        """The point that decides (high-sensitivity)."""
        return self.points[0]


def stability_note(stability: tuple[tuple[int, str], ...]) -> str | None:
    """One sentence on ``--stability``'s rows (``None`` without them)."""
    if not stability:
        return None
    (seed, chosen), others = stability[0], stability[1:]
    same = sum(label == chosen for _, label in stability)
    listed = ", ".join(f"seed {s}: {label}" for s, label in others)
    verdict = ("the same rule under every seed" if same == len(stability) else
               f"the chosen rule under {same} of {len(stability)} seeds: which rule the guard picks "
               "depends on the folds, so read the rules as near-equivalent and confirm the point "
               "on a held-out split")
    return f"fold-seed check: seed {seed} (tuned): {chosen}; {listed}; {verdict}"
