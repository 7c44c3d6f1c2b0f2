"""The morning page in a real headless browser (Debian's ``chromium``): every image loads,
the flagged studies come first, and a screenshot is kept under the test's tmp_path."""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from screen.report import write_report

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu"]


def _browser() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed but CI is set: the set-up command installs it "
                        "(apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI runs this test")
    return CHROMIUM


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.studies: list[dict[str, str]] = []
        self.body: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images.append(values)
        if tag == "body":
            self.body = values
        if "study" in values.get("class", "").split():
            self.studies.append(values)


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(tmp_path)}  # chromium writes its profile under HOME
    return subprocess.run([_browser(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120, env=env, check=False)


def test_the_page_renders_with_every_image_and_flagged_first(night: Any, tmp_path: Path) -> None:
    page = write_report(night.out)
    assert page is not None
    url = page.resolve().as_uri()
    dumped = _run(["--virtual-time-budget=5000", "--dump-dom", url], tmp_path)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = _Dom()
    dom.feed(dumped.stdout)
    assert dom.body.get("data-ready") == "yes"  # the page's script ran after the load event
    assert len(dom.images) == sum(len(night.studies[uid]) for uid in night.order)
    assert [img.get("data-loaded") for img in dom.images] == ["yes"] * len(dom.images)
    assert dom.studies[0]["data-flagged"] == "yes"
    assert [s["data-study"] for s in dom.studies if s["data-flagged"] == "yes"] == list(night.order)

    shot = tmp_path / "report.png"
    taken = _run([f"--screenshot={shot}", "--window-size=1280,2000", url], tmp_path)
    assert taken.returncode == 0, taken.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (1280, 2000)
    assert len(data) > 50_000  # text and thumbnails, not a blank page
