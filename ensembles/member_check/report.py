"""The result of checking a member checkpoint: named checks, each passed, failed or skipped.

Kept free of torch so ``screen models check`` can print a report on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ensembles.errors import CheckpointError

PASSED, FAILED, SKIPPED = "ok", "FAIL", "skip"


@dataclass(frozen=True)
class Check:
    """One named check.

    Attributes:
        name: short id, e.g. ``"loc-tokens"`` (stable: tests and docs name them).
        status: :data:`PASSED`, :data:`FAILED` or :data:`SKIPPED`.
        detail: what was found; for a failure, what is wrong and what to do.
    """

    name: str
    status: str
    detail: str = ""


@dataclass
class CheckReport:
    """Every check run on one checkpoint directory, in order."""

    directory: Path
    kind: str
    checks: list[Check] = field(default_factory=list)

    def passed(self, name: str, detail: str = "") -> None:
        self.checks.append(Check(name, PASSED, detail))

    def failed(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, FAILED, detail))

    def skipped(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, SKIPPED, detail))

    def expect(self, name: str, ok: bool, good: str, bad: str) -> bool:
        """Record ``name`` as passed (``good``) or failed (``bad``); returns ``ok``."""
        if ok:
            self.passed(name, good)
        else:
            self.failed(name, bad)
        return ok

    @property
    def problems(self) -> list[Check]:
        """The failed checks."""
        return [c for c in self.checks if c.status == FAILED]

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """One line per check, for ``screen models check``."""
        width = max([6] + [len(c.name) for c in self.checks])
        return [f"{c.status:<4} {c.name:<{width}} {c.detail}".rstrip() for c in self.checks]

    def raise_for_problems(self) -> None:
        """Raise naming every failed check (nothing when all passed).

        Raises:
            CheckpointError: ``checkpoint DIR (kind) fails N check(s): name: detail; ...``.
        """
        problems = self.problems
        if not problems:
            return
        listed = "; ".join(f"{c.name}: {c.detail}" for c in problems)
        raise CheckpointError(
            f"checkpoint {str(self.directory)!r} ({self.kind}) fails {len(problems)} check(s): "
            f"{listed}"
        )
