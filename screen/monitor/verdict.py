"""One check of ``screen monitor`` and its verdict (shared by the checks and the reads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Check"]


@dataclass(frozen=True)
class Check:
    """One check and its verdict.

    Attributes:
        name: ``score:<member>``, ``score:fused``, ``flag-rate``, ``failures``, ``devices``,
            ``body-parts``, ``sensitivity`` or ``specificity``.
        status: ``ok``, ``alarm``, ``insufficient`` (too few studies) or ``not-checked``.
        p_value: the test's p-value (statistical checks).
        adjusted_p: Holm-adjusted within the family.
        figures: what was measured (statistic, PSI, rates, counts, unseen values ...).
        detail: one line for a person.
    """

    name: str
    status: str
    p_value: float | None = None
    adjusted_p: float | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    detail: str = ""

    @property
    def alarm(self) -> bool:
        return self.status == "alarm"
