"""Progress for long passes: a tqdm bar on a terminal, plain log lines otherwise (cron, CI, pipes)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Iterable, Iterator

from tqdm import tqdm

#: Seconds between plain progress lines when stderr is not a terminal.
LOG_EVERY_S = 30.0


def progress(iterable: Iterator[Any], description: str, total: int) -> Iterable[Any]:
    """Wrap a pass: a bar on a terminal; else a ``screen`` log line every :data:`LOG_EVERY_S` s."""
    if sys.stderr.isatty():
        return tqdm(iterable, desc=description, total=total, leave=False)
    return _log_lines(iterable, description, total)


def _log_lines(iterable: Iterator[Any], description: str, total: int) -> Iterator[Any]:
    logger = logging.getLogger("screen.nightly.progress")
    start = last = time.monotonic()
    for done, item in enumerate(iterable, start=1):
        yield item
        now = time.monotonic()
        if now - last >= LOG_EVERY_S or done == total:
            rate = done / (now - start) if now > start else 0.0
            logger.info("%s: %d/%d (%.1f/s)", description, done, total, rate)
            last = now


def configure_logging() -> None:
    """Our INFO lines on stderr with a timestamp; libraries (highdicom, transformers) stay at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("screen").setLevel(logging.INFO)
