"""The exact search behind ``screen tune``: member thresholds and vote rule for a target.

Every candidate operating point is judged only by its TP and FP counts on the tuning studies.
Every objective here (precision, specificity, F1, Youden's J, sensitivity) gets no worse when
TP rises with FP fixed or FP falls with TP fixed, which gives exact reductions:

1. **Thresholds at positive scores.** For ``any`` and ``k-of-n`` a study's decision only grows
   with each member's vote. Raising a member's threshold up to the next score of a *positive*
   study (or to 1.0 when there is none) keeps every positive study's votes and can only drop
   negative ones: TP stays, FP does not rise. So an optimum always sits on thresholds equal to
   a positive study's score (or 1.0, "this member is off"); no other value needs trying. The
   same holds for the weighted mean's own threshold.
2. **Only the bottom of each run of positives.** If the next lower score (over all studies)
   belongs to positive studies only, lowering the threshold to it adds TP at no FP, so a
   threshold is only tried where the next lower score includes a negative study. A strong
   member, whose positives bunch at the top, keeps few candidates.
3. **One member swept, not enumerated.** With the other members' thresholds fixed, a study is
   positive anyway (``>= k`` votes), never (``< k - 1``), or exactly when the last member votes
   (``k - 1``). Sorting studies by the last member's score once, a cumulative sum over those
   swing studies gives TP and FP for *every* threshold of the last member in one pass.

So ``any`` and ``k-of-n`` enumerate the product of the other members' candidate thresholds
(vectorised, all k at once) and sweep the member with most candidates. That product is exact
up to ``max_combinations`` (default 50,000: 223 candidates each for three members, 50,000 for
two); above it, each enumerated member keeps that many candidates spread evenly over its sorted
positive scores (always with its lowest one and 1.0) and :attr:`SearchResult.exact` is False,
which the report states. The weighted mean enumerates weights on a simplex grid (step 0.1 by
default) and sweeps its threshold exactly.

Ties: higher objective, then fewer false positives (higher specificity), then the simpler rule
(``any``, then ``k-of-n`` by k, then ``weighted-mean``), then the first found.

Decisions use exactly the arithmetic of :func:`ensembles.fusion.decide_study` (``>=`` on the
raw scores, the weighted mean summed in member order), so an :class:`OperatingPoint` built from
a :class:`Choice` reproduces the searched decisions bit for bit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ensembles.fusion import VOTE_RULES, VoteRule, threshold_centred
from ensembles.types import VoteRuleName

__all__ = [
    "LEVEL", "OBJECTIVES", "RULE_FAMILIES", "Choice", "SearchResult", "decide", "exact_interval",
    "free_parameters", "fused_scores", "max_fp_for", "min_tp_for", "min_tp_shown",
    "objective_value", "positives_needed", "search", "weight_grid",
]

#: What a search can maximise; ``sensitivity`` is used for the high-specificity point.
OBJECTIVES: tuple[str, ...] = ("precision", "specificity", "f1", "youden", "sensitivity")
#: Rule families ``screen tune --rules`` accepts.
RULE_FAMILIES: tuple[str, ...] = VOTE_RULES
#: Confidence level of the exact intervals, and of what a set of fracture studies can show.
LEVEL = 0.95
_CELLS = 4_000_000  # elements per vectorised batch (bounds memory, ~30 MB)

#: Rebuilds (rule, thresholds) from the (row, column) of a batch's best point.
Builder = Callable[[int, int], tuple[VoteRule, dict[str, float]]]


@dataclass(frozen=True)
class Choice:
    """One operating point found by the search: the rule, thresholds and counts it achieves.

    Attributes:
        rule: the vote rule.
        thresholds: ``{member: threshold}`` (for ``weighted-mean``, each member's threshold is
            the rule's threshold: member votes there only label, they do not decide).
        tp: true positives on the searched studies.
        fp: false positives on the searched studies.
        complexity: 0 for ``any``, ``k - 1`` for ``k-of-n``, ``n`` for ``weighted-mean``.
    """

    rule: VoteRule
    thresholds: dict[str, float]
    tp: int
    fp: int
    complexity: int


@dataclass(frozen=True)
class SearchResult:
    """The best choice (``None`` when nothing meets the constraints) and what was reachable.

    Attributes:
        best: the chosen point.
        exact: False when a candidate cap thinned some member's thresholds.
        candidates: how many (rule, thresholds) points were scored.
        max_recall: best sensitivity among points meeting the specificity constraint.
        max_specificity: best specificity among points meeting the recall constraint.
    """

    best: Choice | None
    exact: bool
    candidates: int
    max_recall: float
    max_specificity: float


def min_tp_for(target_recall: float, positives: int) -> int:
    """Fewest true positives with ``tp / positives >= target_recall`` (as floats compare)."""
    tp = max(0, min(positives, math.ceil(target_recall * positives)))
    while tp > 0 and (tp - 1) / positives >= target_recall:
        tp -= 1
    while tp < positives and tp / positives < target_recall:
        tp += 1
    return tp


def exact_interval(successes: int, trials: int, level: float = LEVEL) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of ``successes / trials`` (``nan`` without trials).

    Exact: each tail holds at most ``(1 - level) / 2`` at every sample size, so a sensitivity
    of 13/13 gets [0.7529, 1] where a percentile bootstrap says [1, 1] (no resample of 13
    found fractures finds fewer).
    """
    if trials <= 0:
        return math.nan, math.nan
    from scipy.stats import beta  # here, not at import: the CLI starts without scipy.stats

    tail = (1.0 - level) / 2.0
    low = 0.0 if successes <= 0 else float(beta.ppf(tail, successes, trials - successes + 1))
    high = 1.0 if successes >= trials else float(
        beta.ppf(1.0 - tail, successes + 1, trials - successes))
    return low, high


def positives_needed(target: float, level: float = LEVEL) -> int | None:
    """The fewest fracture studies ``n`` whose best case, ``n/n`` found, has a two-sided exact
    ``level`` lower bound >= ``target``; ``None`` for a target of 1 (no ``n`` is enough).

    That bound is ``((1 - level) / 2) ** (1 / n)`` (one-sided 97.5 % at level 0.95): 36 for a
    target of 0.90, 72 for 0.95. The closed form's guess is checked against
    :func:`exact_interval` itself, so the count agrees with the bound the report prints.
    """
    if target >= 1.0:
        return None
    tail = (1.0 - level) / 2.0
    n = max(1, math.ceil(math.log(tail) / math.log(target)))
    while n > 1 and exact_interval(n - 1, n - 1, level)[0] >= target:
        n -= 1
    while exact_interval(n, n, level)[0] < target:
        n += 1
    return n


def min_tp_shown(target: float, positives: int, level: float = LEVEL) -> int | None:
    """Fewest true positives of ``positives`` whose exact lower bound is >= ``target``
    (``None`` when even ``positives / positives`` falls short)."""
    for tp in range(min_tp_for(target, positives), positives + 1):
        if exact_interval(tp, positives, level)[0] >= target:
            return tp
    return None


def max_fp_for(target_specificity: float, negatives: int) -> int:
    """Most false positives with ``(negatives - fp) / negatives >= target_specificity``."""
    tn = min_tp_for(target_specificity, negatives)
    return negatives - tn


def free_parameters(rule: VoteRule, n_members: int) -> int:
    """Free parameters the search fitted for ``rule`` over ``n_members`` members.

    Counted on the rule as ``op.json`` writes it, every value the search chose counting once:

    - ``any``: one threshold per member, ``n`` (a member switched off at 1.0 still counts:
      switching it off was a choice);
    - ``k-of-n``: the ``n`` thresholds and ``k``, ``n + 1``;
    - ``weighted-mean``: ``n - 1`` weights (they sum to 1, so the last is not free) and the
      rule's threshold, ``n`` (its per-member thresholds only label votes, they decide
      nothing).

    Choosing between rule families and, with ``--guard oof``, the in-sample sensitivity a rule
    is fitted to are choices of the procedure, not parameters of the rule, and are not counted.
    """
    if rule.rule == VoteRuleName.K_OF_N:
        return n_members + 1
    return n_members


def objective_value(objective: str, tp: NDArray[np.int64], fp: NDArray[np.int64],
                    positives: int, negatives: int) -> NDArray[np.float64]:
    """The search's objective at TP/FP counts (higher is better; see the module docstring)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if objective == "precision":
            return np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        if objective == "f1":
            return np.asarray(2 * tp / (tp + fp + positives), dtype=np.float64)
        if objective == "youden":
            return np.asarray(tp * negatives - fp * positives, dtype=np.float64)
        if objective == "specificity":
            return np.asarray(-fp, dtype=np.float64)
        return np.asarray(tp, dtype=np.float64)


def weight_grid(n_members: int, step: float) -> list[tuple[float, ...]]:
    """Weights on the simplex in steps of ``step`` (each ``i * step``, summing to 1)."""
    parts = round(1.0 / step)
    if parts < 1 or not math.isclose(parts * step, 1.0, rel_tol=1e-9):
        raise ValueError(f"weight step must divide 1 (e.g. 0.1, 0.25), got {step!r}")
    grid: list[tuple[float, ...]] = []
    for cut in itertools.combinations(range(parts + n_members - 1), n_members - 1):
        bounds = (-1, *cut, parts + n_members - 1)
        counts = [bounds[i + 1] - bounds[i] - 1 for i in range(n_members)]
        grid.append(tuple(c / parts for c in counts))
    grid.sort(key=lambda w: (-min(w), w))  # equal weights first: the simplest reading
    return grid


def _candidates(values: NDArray[np.float64], labels: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Thresholds worth trying for one score column (ascending); see reduction 1 and 3."""
    distinct, where = np.unique(np.append(values, 1.0), return_inverse=True)
    where = where[:-1]  # the appended 1.0 is "off", not a study
    pos = np.bincount(where, weights=labels, minlength=distinct.size)
    neg = np.bincount(where, weights=~labels, minlength=distinct.size)
    useful = (pos > 0) | (distinct == 1.0)
    # dominated: the next lower score holds positives only, so going down to it is free
    useful[1:] &= neg[:-1] > 0
    return distinct[useful]


def _thin(cands: NDArray[np.float64], keep: int) -> NDArray[np.float64]:
    if cands.size <= keep:
        return cands
    idx = np.unique(np.round(np.linspace(0, cands.size - 1, keep)).astype(int))
    return cands[idx]


def _weighted_mean(scores: NDArray[np.float64], weights: Sequence[float]) -> NDArray[np.float64]:
    """``decide_study``'s weighted mean, same operations in the same order."""
    total = 0.0
    for w in weights:
        total += w
    acc = np.zeros(scores.shape[0], dtype=np.float64)
    for j, w in enumerate(weights):
        acc = acc + w * scores[:, j]
    return np.clip(acc / total, 0.0, 1.0)


class _Best:
    """Keeps the best feasible point seen, with the tie-break order of the module docstring."""

    def __init__(self, objective: str, positives: int, negatives: int, min_tp: int,
                 max_fp: int) -> None:
        self.objective, self.p, self.n = objective, positives, negatives
        self.min_tp, self.max_fp = min_tp, max_fp
        self.key: tuple[float, int, int] | None = None
        self.choice: Choice | None = None
        self.max_tp, self.min_fp, self.count = 0, negatives, 0

    def primary(self, tp: NDArray[np.int64], fp: NDArray[np.int64]) -> NDArray[np.float64]:
        return objective_value(self.objective, tp, fp, self.p, self.n)

    def offer(self, tp: NDArray[np.int64], fp: NDArray[np.int64], complexity: int,
              build: Builder) -> None:
        """Consider a 2-D batch of points (rows x candidates); ``build`` names the best one."""
        self.count += tp.size
        fp_ok, tp_ok = fp <= self.max_fp, tp >= self.min_tp
        if fp_ok.any():
            self.max_tp = max(self.max_tp, int(tp[fp_ok].max()))
        if tp_ok.any():
            self.min_fp = min(self.min_fp, int(fp[tp_ok].min()))
        feasible = fp_ok & tp_ok
        if not feasible.any():
            return
        value = np.where(feasible, self.primary(tp, fp), -np.inf)
        top = value.max()
        fp_tie = np.where(value == top, fp, np.iinfo(np.int64).max)
        flat = int(np.argmin(fp_tie))  # first (row-major) among the fewest false positives
        row, col = (int(i) for i in np.unravel_index(flat, tp.shape))
        key = (float(top), -int(fp[row, col]), -complexity)
        if self.key is None or key > self.key:
            rule, thresholds = build(row, col)
            self.key = key
            self.choice = Choice(rule, thresholds, int(tp[row, col]), int(fp[row, col]),
                                 complexity)


def _outer_batches(outer: list[NDArray[np.float64]]) -> Iterator[tuple[int, ...]]:
    """Fixed candidate indices of every enumerated member but the last (batched) one."""
    yield from itertools.product(*(range(c.size) for c in outer[:-1]))


def _search_votes(
    scores: NDArray[np.float64], labels: NDArray[np.bool_], members: Sequence[str],
    ks: Sequence[int], best: _Best, max_combinations: int,
) -> bool:
    m = len(members)
    cands = [_candidates(scores[:, j], labels) for j in range(m)]
    inner = int(np.argmax([c.size for c in cands]))
    outer_idx = [j for j in range(m) if j != inner]
    outer = [cands[j] for j in outer_idx]
    exact = True
    if outer and math.prod(c.size for c in outer) > max_combinations:
        keep = max(2, int(max_combinations ** (1.0 / len(outer))))
        thinned = [_thin(c, keep) for c in outer]
        exact = all(t.size == c.size for t, c in zip(thinned, outer))
        outer = thinned
    order = np.argsort(-scores[:, inner], kind="stable")
    ranked = scores[order]
    y = labels[order]
    inner_c = cands[inner]
    # studies with inner score >= t, for each inner candidate t (scores sorted descending)
    pos_at = np.searchsorted(-ranked[:, inner], -inner_c, side="right")
    outer_votes = [ranked[:, j][None, :] >= c[:, None] for j, c in zip(outer_idx, outer)]
    n = scores.shape[0]
    step = max(1, _CELLS // max(n, 1))
    for head in _outer_batches(outer):
        base = np.zeros(n, dtype=np.int8)
        for j, i in enumerate(head):
            base = base + outer_votes[j][i]
        votes_all = base[None, :] + outer_votes[-1] if outer else base[None, :]
        for r0 in range(0, votes_all.shape[0], step):
            votes = votes_all[r0:r0 + step]
            for k in ks:
                always = votes >= k
                swing = votes == k - 1
                tp0 = np.count_nonzero(always & y, axis=1)
                fp0 = np.count_nonzero(always & ~y, axis=1)
                # column 0 = no study above the threshold; column i = the first i studies
                cum_tp = np.zeros((votes.shape[0], n + 1), dtype=np.int32)
                cum_fp = np.zeros((votes.shape[0], n + 1), dtype=np.int32)
                np.cumsum(swing & y, axis=1, dtype=np.int32, out=cum_tp[:, 1:])
                np.cumsum(swing & ~y, axis=1, dtype=np.int32, out=cum_fp[:, 1:])
                tp = tp0[:, None] + cum_tp[:, pos_at]
                fp = fp0[:, None] + cum_fp[:, pos_at]

                def build(row: int, col: int, k: int = k, head: tuple[int, ...] = head,
                          r0: int = r0) -> tuple[VoteRule, dict[str, float]]:
                    chosen = list(head) + ([r0 + row] if outer else [])
                    found = {members[j]: float(c[i]) for j, i, c in zip(outer_idx, chosen, outer)}
                    found[members[inner]] = float(inner_c[col])
                    rule = VoteRule(VoteRuleName.ANY) if k == 1 else VoteRule(VoteRuleName.K_OF_N, k=k)
                    return rule, {name: found[name] for name in members}

                best.offer(tp, fp, k - 1, build)
    return exact


def _search_weighted(
    scores: NDArray[np.float64], labels: NDArray[np.bool_], members: Sequence[str], step: float,
    best: _Best,
) -> None:
    m = len(members)
    for weights in weight_grid(m, step):
        fused = _weighted_mean(scores, weights)
        order = np.argsort(-fused, kind="stable")
        y = labels[order]
        cands = _candidates(fused, labels)
        pos_at = np.searchsorted(-fused[order], -cands, side="right")
        cum_tp = np.r_[0, np.cumsum(y)]
        cum_fp = np.r_[0, np.cumsum(~y)]

        def build(row: int, col: int, weights: tuple[float, ...] = weights,
                  cands: NDArray[np.float64] = cands) -> tuple[VoteRule, dict[str, float]]:
            t = float(cands[col])
            rule = VoteRule(VoteRuleName.WEIGHTED_MEAN, weights=dict(zip(members, weights)), threshold=t)
            return rule, {name: t for name in members}

        best.offer(cum_tp[pos_at][None, :], cum_fp[pos_at][None, :], m, build)


def search(
    scores: NDArray[np.float64],
    labels: NDArray[np.bool_],
    members: Sequence[str],
    *,
    objective: str = "precision",
    rules: Sequence[str] = RULE_FAMILIES,
    min_recall: float = 0.0,
    min_specificity: float = 0.0,
    weight_step: float = 0.1,
    max_combinations: int = 50_000,
    ks: Sequence[int] | None = None,
) -> SearchResult:
    """Find the best operating point for the constraints (see the module docstring).

    Args:
        scores: ``(studies, members)`` study scores in [0, 1] (no ``nan``).
        labels: truth per study; needs positives and negatives.
        members: member names, one per column.
        objective: one of :data:`OBJECTIVES`.
        rules: rule families from :data:`RULE_FAMILIES`; ``any`` also covers k-of-n with k=1.
        min_recall: sensitivity the point must reach.
        min_specificity: specificity the point must reach.
        weight_step: simplex grid step of weighted-mean weights.
        max_combinations: cap on enumerated threshold combinations per rule family.
        ks: vote counts to try (1 is ``any``), instead of those ``rules`` implies; the guards of
            :mod:`screen.tune.tuner` search ``any`` and ``k-of-n`` (k >= 2) apart this way.
    """
    positives = int(labels.sum())
    negatives = int(labels.size - positives)
    best = _Best(objective, positives, negatives, min_tp_for(min_recall, positives),
                 max_fp_for(min_specificity, negatives))
    m = len(members)
    if ks is None:
        ks = ([1] if VoteRuleName.ANY in rules else []) + (
            list(range(1 if VoteRuleName.ANY not in rules else 2, m + 1))
            if VoteRuleName.K_OF_N in rules else []
        )
    exact = True
    if ks:
        exact = _search_votes(scores, labels, members, ks, best, max_combinations)
    if VoteRuleName.WEIGHTED_MEAN in rules:
        _search_weighted(scores, labels, members, weight_step, best)
    return SearchResult(
        best=best.choice, exact=exact, candidates=best.count,
        max_recall=best.max_tp / positives if positives else math.nan,
        max_specificity=(negatives - best.min_fp) / negatives if negatives else math.nan,
    )


def decide(scores: NDArray[np.float64], members: Sequence[str], rule: VoteRule,
           thresholds: dict[str, float]) -> NDArray[np.bool_]:
    """Vectorised :func:`ensembles.fusion.decide_study` over rows of study scores."""
    if rule.rule == VoteRuleName.WEIGHTED_MEAN:
        weights = [float((rule.weights or {})[m]) for m in members]
        return _weighted_mean(scores, weights) >= float(rule.threshold or 0.0)
    votes = np.zeros(scores.shape[0], dtype=np.int64)
    for j, m in enumerate(members):
        votes += scores[:, j] >= thresholds[m]
    return votes >= (1 if rule.rule == VoteRuleName.ANY else int(rule.k or 1))


def fused_scores(scores: NDArray[np.float64], members: Sequence[str], rule: VoteRule,
                 thresholds: dict[str, float]) -> NDArray[np.float64]:
    """The fused study score of :func:`~ensembles.fusion.decide_study`, for curves.

    ``any``/``k-of-n``: the k-th largest threshold-centred member score, clamped to agree with
    the votes (>= 0.5 exactly when positive); ``weighted-mean``: the weighted mean.
    """
    if rule.rule == VoteRuleName.WEIGHTED_MEAN:
        return _weighted_mean(scores, [float((rule.weights or {})[m]) for m in members])
    centred = np.empty_like(scores)
    for j, m in enumerate(members):
        t = thresholds[m]
        centred[:, j] = [threshold_centred(float(s), t) for s in scores[:, j]]
    k = 1 if rule.rule == VoteRuleName.ANY else int(rule.k or 1)
    kth = -np.sort(-centred, axis=1)[:, k - 1]
    positive = decide(scores, members, rule, thresholds)
    return np.where(positive, np.maximum(kth, 0.5), np.minimum(kth, math.nextafter(0.5, 0)))
