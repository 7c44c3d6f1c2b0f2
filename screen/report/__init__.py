"""The morning page: ``report.html`` in the output folder, thumbnails beside it.

``screen run`` writes it at the end of every night (:func:`write_report` with ``keep_going``:
a page that cannot be written never fails the night; the reason goes to ``run.json``
``report`` and the log); ``screen report OUT`` rebuilds it from the folder alone.

- :mod:`screen.report.model` reads ``run.json``, ``studies.csv``, ``findings.csv`` and
  ``scan.csv`` into the page's content;
- :mod:`screen.report.thumbs` draws each flagged study's images with their boxes (PNG);
- :mod:`screen.report.html` writes the one static page.

Files get the permissions of the folder's ``studies.csv`` (which ``[output] file_mode`` set):
the page and the thumbnails hold the same identifiers. So ``screen report OUT`` needs no site
config: what the page may show is what ``studies.csv`` holds.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from pathlib import Path
from typing import Mapping

from dicom_io.atomic import atomic_write_text, file_mode
from screen.errors import ReportError
from screen.report.html import render_page
from screen.report.model import read_night
from screen.report.thumbs import Thumb, make_thumb, prune

__all__ = ["REPORT_NAME", "write_report"]

log = logging.getLogger("screen.report")

REPORT_NAME = "report.html"


def write_report(out_dir: Path, *, sources: Mapping[str, Path] | None = None,
                 keep_going: bool = False) -> Path | None:
    """Write ``out_dir/report.html`` and its thumbnails; returns the page's path.

    Args:
        out_dir: an output folder of ``screen run`` (it has ``run.json`` and ``studies.csv``).
        sources: SOP Instance UID to source file, for the thumbnails (the run passes its scan's);
            missing ones come from ``scan.csv`` when it holds paths; an image found nowhere gets
            a placeholder, and a thumbnail already made is reused without its source.
        keep_going: the night's call: a failure is logged and recorded in ``run.json``
            (``report``: ``{"written": false, "reason": ...}``) and ``None`` is returned; on
            success ``run.json`` records ``{"written": true, "path", "seconds"}``.

    Raises:
        ReportError: (without ``keep_going``) no ``run.json``, or a table that does not read.
    """
    started = time.perf_counter()
    try:
        path = _write(out_dir, sources or {})
    except Exception as exc:  # noqa: BLE001 - the night is done; the page must not undo it
        if not keep_going:
            raise
        # the type only: a message may quote a table's cell
        reason = f"{type(exc).__name__} while writing the page"
        log.warning("the morning page was not written: %s", reason)
        _record(out_dir, {"written": False, "reason": reason})
        return None
    if keep_going:
        _record(out_dir, {"written": True, "path": REPORT_NAME,
                          "seconds": round(time.perf_counter() - started, 3)})
    return path


def _write(out_dir: Path, sources: Mapping[str, Path]) -> Path:
    studies = out_dir / "studies.csv"
    if not studies.is_file():
        raise ReportError(f"{out_dir} has no studies.csv: run `screen run ARCHIVE --out {out_dir}` first")
    mode = stat.S_IMODE(studies.stat().st_mode)
    page = read_night(out_dir)
    known = {**page.sources, **sources}
    with file_mode(mode):
        thumbs: dict[str, list[Thumb]] = {}
        for entry in page.flagged:
            thumbs[entry.study_instance_uid] = [make_thumb(out_dir, image, page.levels, known)
                                                for image in entry.images]
        links = [t.link for pictures in thumbs.values() for t in pictures if t.link]
        for link in links:  # reused thumbnails follow tonight's mode too
            os.chmod(out_dir / link, mode)
        target = out_dir / REPORT_NAME
        atomic_write_text(target, render_page(page, thumbs))
    prune(out_dir, links)
    return target


def _record(out_dir: Path, outcome: dict[str, object]) -> None:
    """Add the page's outcome to ``run.json`` (its own failure is only logged)."""
    from screen.nightly.tables import write_run_json

    path = out_dir / "run.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data.pop("format_version", None)
            write_run_json(path, {**data, "report": outcome})
    except (OSError, ValueError) as exc:
        log.warning("run.json could not record the page's outcome: %s", type(exc).__name__)
