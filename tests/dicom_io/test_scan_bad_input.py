"""scan_archive: every bad file is a row with a reason; nothing crashes, nothing hangs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dicom_io.scan import scan_archive
from dicom_io.select import SelectionRules


def _rows(result):  # type: ignore[no-untyped-def]
    return {r.path.name: r for r in result.rows}


@pytest.fixture
def bad_archive(write_dicom, tmp_path: Path) -> Path:
    root = tmp_path / "export"
    write_dicom("export/good.dcm")
    write_dicom("export/name with spaces ünïcødé.dcm")
    (root / "zero.dcm").write_bytes(b"")
    (root / "random.dcm").write_bytes(np.random.default_rng(1).bytes(4096))
    trunc = write_dicom("export/truncated.dcm", rows=64, cols=64)
    trunc.write_bytes(trunc.read_bytes()[:-1000])
    write_dicom("export/no_sop.dcm", SOPInstanceUID="")
    write_dicom("export/sr.dcm", modality="SR", sop_class="1.2.840.10008.5.1.4.1.1.88.33", with_pixels=False)
    write_dicom("export/mr.dcm", modality="MR", sop_class="1.2.840.10008.5.1.4.1.1.4")
    write_dicom("export/scout.dcm", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    write_dicom("export/derived.dcm", ImageType=["DERIVED", "SECONDARY"])
    write_dicom("export/burned.dcm", BurnedInAnnotation="YES")
    write_dicom("export/sc.dcm", modality="OT", sop_class="1.2.840.10008.5.1.4.1.1.7")
    # A header claiming 65535 x 65535 x 1000 frames over a few bytes of pixel data.
    write_dicom("export/huge.dcm", rows=4, cols=4, Rows=65535, Columns=65535, NumberOfFrames=1000)
    os.symlink(root, root / "loop")
    return root


EXPECTED = {
    "good.dcm": ("selected", ""),
    "name with spaces ünïcødé.dcm": ("selected", ""),
    "zero.dcm": ("failed", "empty-file"),
    "random.dcm": ("failed", "not-dicom"),
    "truncated.dcm": ("failed", "truncated-pixel-data"),
    "no_sop.dcm": ("failed", "missing-uid"),
    "sr.dcm": ("skipped", "non-image-object"),
    "mr.dcm": ("skipped", "modality"),
    "scout.dcm": ("skipped", "localizer"),
    "derived.dcm": ("skipped", "derived-image"),
    "burned.dcm": ("skipped", "burned-in-annotation"),
    "sc.dcm": ("skipped", "secondary-capture"),
    "huge.dcm": ("skipped", "too-large"),
    "loop": ("skipped", "symlink-loop"),
}


@pytest.mark.parametrize("workers", [1, 2], ids=["inline", "two-workers"])
def test_every_bad_file_gets_its_row(bad_archive: Path, workers: int) -> None:
    result = scan_archive(bad_archive, decode=True, workers=workers)
    rows = _rows(result)
    assert set(rows) == set(EXPECTED)
    got = {name: (row.outcome, row.reason) for name, row in rows.items()}
    assert got == EXPECTED
    assert "65535x65535x1000" in rows["huge.dcm"].message
    assert rows["good.dcm"].voi_source  # decoded
    assert len(result.studies) == 2  # the two selected files are separate studies


def test_size_limit_is_configurable(write_dicom, tmp_path: Path) -> None:
    write_dicom("s/a.dcm", rows=64, cols=64)
    small = SelectionRules(max_pixel_bytes=64 * 64 * 2 - 1)
    assert _rows(scan_archive(tmp_path / "s", rules=small))["a.dcm"].reason == "too-large"
    assert _rows(scan_archive(tmp_path / "s"))["a.dcm"].outcome == "selected"


def test_constant_image_fails_only_with_decode(write_dicom, tmp_path: Path) -> None:
    write_dicom("c/flat.dcm", pixels=np.full((32, 24), 7, dtype=np.uint16))
    assert _rows(scan_archive(tmp_path / "c"))["flat.dcm"].outcome == "selected"
    row = _rows(scan_archive(tmp_path / "c", decode=True))["flat.dcm"]
    assert (row.outcome, row.reason) == ("failed", "constant-image")


def test_non_utf8_file_name_is_a_printable_row(write_dicom, tmp_path: Path) -> None:
    src = write_dicom("n/a.dcm")
    odd = os.fsencode(tmp_path / "n") + b"/caf\xe9.dcm"
    os.rename(src, odd)
    result = scan_archive(tmp_path / "n")
    (row,) = result.rows
    assert row.outcome == "selected"
    assert row.as_dict()["path"].endswith("caf\\xe9.dcm")


def test_duplicate_sop_instance_is_skipped(write_dicom, tmp_path: Path) -> None:
    write_dicom("d/a.dcm", sop_uid="1.2.3.4")
    write_dicom("d/b.dcm", sop_uid="1.2.3.4")
    rows = _rows(scan_archive(tmp_path / "d"))
    assert rows["a.dcm"].outcome == "selected"
    assert (rows["b.dcm"].outcome, rows["b.dcm"].reason) == ("skipped", "duplicate-sop-instance")
