"""The morning page as plain HTML: content, order, escaping, no external URL, file modes, names."""

from __future__ import annotations

import json
import re
import stat
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typing import Any
from click.testing import CliRunner

from dicom_io.tables import FINDINGS, read_table, records, write_table
from screen.cli import cli
from screen.errors import ReportError
from screen.report import write_report
from screen.report.model import safe_link

HOSTILE_REASON = "<script>alert(1)</script>"  # as the night's conftest writes them
HOSTILE_ACCESSION = '"><img src=x onerror=alert(2)>'



class _Page(HTMLParser):
    """The page's tags and attributes, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _studies(page: _Page) -> list[dict[str, str]]:
    return [attrs for tag, attrs in page.tags if "study" in attrs.get("class", "").split()]


def test_flagged_first_by_level_then_score_then_the_rest(night: Any) -> None:
    path = write_report(night.out)
    assert path == night.out / "report.html"
    listed = _studies(_parse(path.read_text(encoding="utf-8")))
    flagged = [s["data-study"] for s in listed if s["data-flagged"] == "yes"]
    assert flagged == list(night.order)  # fracture 0.9, fracture 0.7, then doubt 0.95
    assert [s["data-flagged"] for s in listed[:3]] == ["yes"] * 3
    rest = [(s["data-study"], s["data-status"]) for s in listed[3:]]
    assert rest == [(night.negative, "screened"), (night.failed, "failed"), ("1.2.3.4.5", "out-of-scope")]
    assert "1.2.3.4.6" not in path.read_text(encoding="utf-8")  # an earlier night's study: counted only


def test_summary_counts_reasons_and_wording(night: Any) -> None:
    text = write_report(night.out).read_text(encoding="utf-8")  # type: ignore[union-attr]
    counts = dict(re.findall(r'data-count="([^"]+)">(\d+)<', text))
    assert counts["Screened tonight"] == "4" and counts["Flagged"] == "3"
    assert counts["Flagged: fracture"] == "2" and counts["Flagged: doubt"] == "1"
    assert counts["No AI finding"] == "1" and counts["Failed"] == "1" and counts["Out of scope"] == "1"
    assert "1 studies of this folder were last screened on an earlier night" in text
    assert "AI fracture 90 % (fracture)" in text and "AI fracture 95 % (doubt)" in text
    assert "no AI finding" in text and "normal" not in text.lower()
    assert "Results of demo members: not clinical results" in text
    assert "pg-cls 90 % (voted fracture)" in text and "detr 40 % (no vote)" in text
    assert f'href="sr/{night.order[0]}/1.2.3.dcm"' in text  # the SR of the study that has one
    assert "AI screening result, not for primary diagnosis" in text


def test_hostile_text_appears_only_escaped(night: Any) -> None:
    text = write_report(night.out).read_text(encoding="utf-8")  # type: ignore[union-attr]
    assert HOSTILE_REASON not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert HOSTILE_ACCESSION not in text and "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in text
    tags = _parse(text).tags
    assert [t for t, _ in tags].count("script") == 1  # the page's own, nothing injected
    assert not [a for _, a in tags if any(k.startswith("on") for k in a)]
    assert all(a.get("src", "").startswith("report/thumbs/") for t, a in tags if t == "img")


def test_no_url_leaves_the_folder(night: Any) -> None:
    text = write_report(night.out).read_text(encoding="utf-8")  # type: ignore[union-attr]
    links = [a[k] for _, a in _parse(text).tags for k in ("href", "src", "action") if k in a]
    assert links and all(safe_link(link) == link for link in links)  # relative, inside the folder
    assert not re.search(r"(https?:|ftp:|//|url\(|@import)", text.replace("file:", ""))
    imgs = [a["src"] for t, a in _parse(text).tags if t == "img"]
    assert len(imgs) == sum(len(night.studies[uid]) for uid in night.order)
    assert all((night.out / src).is_file() for src in imgs)


def test_files_get_the_mode_of_studies_csv_and_hold_no_name(night: Any) -> None:
    write_report(night.out)
    thumbs = sorted((night.out / "report" / "thumbs").glob("*.png"))
    assert len(thumbs) == sum(len(night.studies[uid]) for uid in night.order)
    for path in [night.out / "report.html", *thumbs]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
    assert stat.S_IMODE((night.out / "report" / "thumbs").stat().st_mode) == 0o750
    blobs = [(night.out / "report.html").read_bytes()] + [p.read_bytes() for p in thumbs]
    for name in night.patient_names:
        for part in {name, *name.split("^")} - {""}:
            assert not any(part.encode() in blob for blob in blobs), part
    assert not any(b"tEXt" in blob or b"iTXt" in blob or b"zTXt" in blob for blob in blobs[1:])


def test_thumbnails_are_reused_and_redrawn_when_boxes_change(night: Any) -> None:
    write_report(night.out)
    folder = night.out / "report" / "thumbs"
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")}
    archive = next(iter(night.sources.values())).parents[3]
    assert archive.name == "export"
    archive.rename(archive.with_name("moved"))  # no source any more: existing thumbnails still serve
    write_report(night.out)
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")} == before
    rows = records(read_table(night.out / "findings.csv", FINDINGS))
    rows[0]["col1"] = 80.0
    write_table(night.out / "findings.csv", FINDINGS, rows)
    text = write_report(night.out).read_text(encoding="utf-8")  # type: ignore[union-attr]
    after = {p.name for p in folder.glob("*.png")}
    assert len(after) == len(before) - 1  # the changed image has no source now: a placeholder; old one pruned
    assert "image not available (source-not-found)" in text


def test_an_image_that_does_not_decode_gets_a_placeholder(night: Any) -> None:
    broken = night.sources[night.studies[night.order[0]][0]]
    broken.write_bytes(b"not a DICOM file")
    text = write_report(night.out).read_text(encoding="utf-8")  # type: ignore[union-attr]
    assert "image not available (no-pixel-data)" in text


def test_a_link_is_only_a_plain_relative_path() -> None:
    assert safe_link("sr/1.2/3.4.dcm") == "sr/1.2/3.4.dcm"
    for bad in ("javascript:alert(1)", "../x.dcm", "/etc/passwd", "sr/../../x", "http://x/y", "a b", ""):
        assert safe_link(bad) is None, bad


def test_screen_report_rebuilds_and_says_what_is_missing(night: Any, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(night.out)])
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {night.out / 'report.html'}\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "studies.csv").write_text("x\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["report", str(empty)])
    assert result.exit_code == 2
    assert result.output == (f"Error: {empty} has no run.json: the page shows a night of `screen run`; "
                             f"run `screen run ARCHIVE --out {empty}` first\n")


def test_a_page_that_fails_never_fails_the_night(night: Any) -> None:
    (night.out / "findings.csv").write_text("not,the,header\n", encoding="utf-8")
    with pytest.raises(ReportError, match="findings file .* lacks column"):
        write_report(night.out)
    assert write_report(night.out, keep_going=True) is None
    recorded = json.loads((night.out / "run.json").read_text(encoding="utf-8"))["report"]
    assert recorded == {"written": False, "reason": "ReportError while writing the page"}
    assert not (night.out / "report.html").exists()
