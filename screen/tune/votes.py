"""How each member votes at a tuned point, and the votes that carry no information.

The exact search (:mod:`screen.tune.search`) may find its optimum at a point where one member's
vote hardly depends on the study: a threshold so low that the member votes yes on nearly every
study, normal or not (a *rubber stamp*), or so high, short of switching it off at 1.0, that it
votes yes on almost no fracture study (*silent*). Such a point is a true optimum on the tuning
set, yet it reads wrongly: "2 of 3 members agree" with a rubber stamp among the three is in
effect "1 of the other 2", and the stamp's few no-votes decide a handful of studies by chance.
The tuner keeps the point (it is what the target asks for) and says so: in ``report.md``'s vote
table, in the CLI's warnings and in ``op.json``'s ``provenance.notes``, so the engineer can
read the rule as it acts, or tune again without that member (``--members``) or with
``--rules any``.

Only ``any`` and ``k-of-n`` are judged: under ``weighted-mean`` the member thresholds label
votes and decide nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ensembles.fusion import VoteRule
from ensembles.types import VoteRuleName

__all__ = ["RUBBER_STAMP", "SILENT", "MemberVotes", "member_votes", "vote_warnings"]

RUBBER_STAMP = 0.95
"""A member that votes yes on at least this share of the normal tuning studies is a rubber
stamp: its vote tells a normal study from a fracture no better than a constant does."""
SILENT = 0.05
"""A member (not switched off at 1.0) that votes yes on at most this share of the fracture
tuning studies is silent: its vote finds almost nothing."""


@dataclass(frozen=True)
class MemberVotes:
    """One member's votes at a point, over the tuning studies.

    Attributes:
        member: the member's name.
        threshold: its threshold at the point.
        yes_fracture: fracture studies it votes yes on.
        fracture: fracture studies.
        yes_normal: normal studies it votes yes on.
        normal: normal studies.
        role: ``"rubber stamp"``, ``"silent"``, ``"off"`` (threshold above every score it
            could give, 1.0) or ``None`` (an informative vote).
    """

    member: str
    threshold: float
    yes_fracture: int
    fracture: int
    yes_normal: int
    normal: int
    role: str | None

    @property
    def fracture_rate(self) -> float:
        return self.yes_fracture / self.fracture if self.fracture else float("nan")

    @property
    def normal_rate(self) -> float:
        return self.yes_normal / self.normal if self.normal else float("nan")


def _role(threshold: float, fracture_rate: float, normal_rate: float) -> str | None:
    if threshold >= 1.0:
        return "off"
    if normal_rate >= RUBBER_STAMP:
        return "rubber stamp"
    if fracture_rate <= SILENT:
        return "silent"
    return None


def member_votes(scores: NDArray[np.float64], labels: NDArray[np.bool_], members: Sequence[str],
                 rule: VoteRule, thresholds: dict[str, float]) -> tuple[MemberVotes, ...]:
    """Each member's yes-votes on fracture and normal studies at ``thresholds`` (``>=``, as
    :func:`ensembles.fusion.decide_study` votes); empty for ``weighted-mean``."""
    if rule.rule == VoteRuleName.WEIGHTED_MEAN:
        return ()
    fracture, normal = int(labels.sum()), int((~labels).sum())
    out = []
    for j, member in enumerate(members):
        t = float(thresholds[member])
        yes = scores[:, j] >= t
        yf, yn = int((yes & labels).sum()), int((yes & ~labels).sum())
        role = _role(t, yf / fracture if fracture else float("nan"),
                     yn / normal if normal else float("nan"))
        out.append(MemberVotes(member, t, yf, fracture, yn, normal, role))
    return tuple(out)


def vote_warnings(votes: Sequence[MemberVotes], rule: VoteRule) -> list[str]:
    """One sentence per rubber-stamp or silent member: what it does to the rule as read."""
    informative = [v.member for v in votes if v.role is None]
    k = 1 if rule.rule == VoteRuleName.ANY else int(rule.k or 1)
    stamps = [v for v in votes if v.role == "rubber stamp"]
    warnings = []
    for v in votes:
        share = (f"{v.member} >= {v.threshold:.4g} votes yes on {v.yes_normal}/{v.normal} normal "
                 f"and {v.yes_fracture}/{v.fracture} fracture tuning studies")
        if v.role == "rubber stamp":
            if k == 1:
                effect = "so the rule flags nearly every study"
            else:
                others = [o.member for o in votes if o.role not in ("rubber stamp", "off")]
                need = k - len(stamps)
                effect = (f"so '{rule.label}' acts as {max(need, 0)} of "
                          f"{', '.join(others) or 'no other member'} on most studies"
                          if need > 0 else "so the rule flags nearly every study")
            warnings.append(f"{share}: a rubber stamp, its vote hardly depends on the study, "
                            f"{effect}")
        elif v.role == "silent":
            effect = ("it adds almost no finding" if k == 1 else
                      "it rarely supplies one of the votes the rule needs")
            warnings.append(f"{share}: silent, {effect}")
    if warnings and informative:
        warnings.append("informative votes: " + ", ".join(informative)
                        + "; tune again without the others (--members) or with --rules any "
                        "to get a rule that reads as it acts")
    return warnings
