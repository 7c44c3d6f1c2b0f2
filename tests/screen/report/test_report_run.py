"""``screen run`` writes the morning page: a phantom archive whose accession numbers and study
descriptions are markup, patient ids included, ``file_mode = "0640"``."""

from __future__ import annotations

import json
import shutil
import stat
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable

import pydicom
import pytest
from click.testing import CliRunner

import screen.report.thumbs
from screen.cli import cli


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(text: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(text)
    return parser.tags


HOSTILE = ("<script>alert(1)</script>", '"><img src=x onerror=alert(2)>')


def test_the_night_writes_the_page_with_hostile_headers_escaped(
        small_archive: Path, tiny_models: Path, site_writer: Callable[..., Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "export"
    shutil.copytree(small_archive, archive)
    names: set[str] = set()
    studies: dict[str, str] = {}
    for path in sorted(archive.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        study = str(ds.StudyInstanceUID)
        studies.setdefault(study, HOSTILE[len(studies) % 2])
        ds.AccessionNumber = studies[study][:16]  # SH: 16 characters at most
        ds.StudyDescription = studies[study]
        names.add(str(ds.PatientName))
        ds.save_as(path)
    site = site_writer(tmp_path / "site", tiny_models, thresholds={"pg-cls": 0.0, "pg-det": 0.0, "detr": 0.0},
                       output='patient_id = "include"\nfile_mode = "0640"')
    out = tmp_path / "out"

    def no_second_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("the page decoded a source again: the night's previews were not used")

    monkeypatch.setattr(screen.report.thumbs, "load_radiograph", no_second_decode)
    result = CliRunner().invoke(cli, ["run", str(archive), "--config", str(site), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "thumbnails of study" not in result.output
    page = out / "report.html"
    text = page.read_text(encoding="utf-8")
    recorded = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert recorded["report"]["written"] is True and recorded["report"]["path"] == "report.html"
    assert recorded["levels"] == [] and recorded["patient_id_policy"] == "include"
    for hostile in HOSTILE:
        assert hostile[:16] not in text
    assert "&lt;script&gt;alert(" in text and "&quot;&gt;&lt;img src=x " in text
    tags = _tags(text)
    assert [tag for tag, _ in tags].count("script") == 1  # the page's own
    assert not [attrs for _, attrs in tags if any(name.startswith("on") for name in attrs)]
    assert text.count('data-flagged="yes"') == len(studies)  # thresholds 0: every study flagged
    thumbs = sorted((out / "report" / "thumbs").glob("*.png"))
    assert len(thumbs) == sum(1 for _ in archive.rglob("*.dcm"))
    for path in [page, *thumbs]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    blobs = [page.read_bytes(), *(p.read_bytes() for p in thumbs)]
    for name in names:
        for part in {name, *name.split("^")} - {""}:
            assert not any(part.encode() in blob for blob in blobs), "a patient name reached the page"
