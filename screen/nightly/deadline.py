"""A night that must end: ``--deadline HH:MM`` / ``[run] deadline``.

At the deadline the runner starts no new study; those whose images are already being decoded
or scored finish and are recorded. The studies not started are *deferred*: they are not in the
ledger as done, so the next night screens them first (in the night's priority order), and the
run's summary, ``run.json``, the closing table and the ledger's run record name them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from screen.errors import ConfigError
from screen.site_config import is_clock_time

__all__ = ["Clock", "Deadline", "local_now"]

#: What tells the time: naive local time (the deadline is a wall-clock time of the site).
Clock = Callable[[], datetime]


def local_now() -> datetime:
    """The machine's local time."""
    return datetime.now()


@dataclass(frozen=True)
class Deadline:
    """The moment after which no new study starts.

    Attributes:
        at: local date and time of the deadline.
        text: the ``HH:MM`` it was given as.
        clock: what tells the time (a test passes a fake one).
    """

    at: datetime
    text: str
    clock: Clock = local_now

    @classmethod
    def parse(cls, text: str, *, clock: Clock = local_now, option: str = "--deadline") -> Deadline:
        """``HH:MM`` today, or tomorrow when that is earlier than now (a night that starts at
        22:00 with a deadline of 06:30 ends tomorrow morning).

        Raises:
            ConfigError: not ``HH:MM``.
        """
        if not is_clock_time(text):
            raise ConfigError(f"{option} {text!r} is not a local time; use HH:MM, 24-hour (e.g. 06:30)")
        now = clock()
        hours, minutes = (int(part) for part in text.split(":"))
        at = now.replace(hour=hours, minute=minutes, second=0, microsecond=0)
        if at < now:
            at += timedelta(days=1)
        return cls(at, text, clock)

    def passed(self) -> bool:
        return self.clock() >= self.at

    def epoch(self) -> float:
        """The deadline as a POSIX time (for processes on other machines: the Ray engine)."""
        return time.time() + (self.at - self.clock()).total_seconds()
