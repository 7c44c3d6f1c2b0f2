"""discover: every path gets a classification, by content, never by extension alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dicom_io.discover import discover, sniff


def _by_name(result):  # type: ignore[no-untyped-def]
    rows = {r.path.name: r for r in result.rejected}
    found = {f.path.name: f for f in result.found}
    return rows, found


def test_dicom_found_by_content_whatever_the_name(write_dicom, tmp_path: Path) -> None:
    write_dicom("a/no_extension")
    write_dicom("a/image.txt")
    (tmp_path / "a" / "notes.dcm").write_bytes(os.urandom(600))
    (tmp_path / "a" / "readme.txt").write_text("hello")
    (tmp_path / "a" / "empty.dcm").write_bytes(b"")
    rows, found = _by_name(discover(tmp_path))
    assert set(found) == {"no_extension", "image.txt"}
    assert (rows["notes.dcm"].outcome, rows["notes.dcm"].reason) == ("failed", "not-dicom")
    assert (rows["readme.txt"].outcome, rows["readme.txt"].reason) == ("skipped", "not-dicom")
    assert (rows["empty.dcm"].outcome, rows["empty.dcm"].reason) == ("failed", "empty-file")


def test_symlink_loop_is_a_row_and_the_walk_ends(write_dicom, tmp_path: Path) -> None:
    write_dicom("root/sub/x.dcm")
    os.symlink(tmp_path / "root", tmp_path / "root" / "sub" / "loop")
    result = discover(tmp_path / "root")
    assert [f.path.name for f in result.found] == ["x.dcm"]
    loops = [r for r in result.rejected if r.reason == "symlink-loop"]
    assert len(loops) == 1 and loops[0].path.name == "loop"


def test_second_link_to_same_file_and_broken_link(write_dicom, tmp_path: Path) -> None:
    target = write_dicom("d/x.dcm")
    os.symlink(target, tmp_path / "d" / "y.dcm")
    os.symlink(tmp_path / "d" / "gone.dcm", tmp_path / "d" / "z.dcm")
    rows, found = _by_name(discover(tmp_path / "d"))
    assert list(found) == ["x.dcm"]
    assert rows["y.dcm"].reason == "duplicate-file"
    assert (rows["z.dcm"].outcome, rows["z.dcm"].reason) == ("failed", "broken-link")


def test_unreadable_file_is_a_failed_row(write_dicom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_dicom("p/locked.dcm")
    real_open = open

    def guarded_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(file) == path:
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    rows, found = _by_name(discover(tmp_path / "p"))
    assert not found
    assert (rows["locked.dcm"].outcome, rows["locked.dcm"].reason) == ("failed", "unreadable")
    assert "Permission denied" in rows["locked.dcm"].message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_permissions_for_real(write_dicom, tmp_path: Path) -> None:  # pragma: no cover - root in CI
    path = write_dicom("q/locked.dcm")
    path.chmod(0)
    rows, _ = _by_name(discover(tmp_path / "q"))
    assert rows["locked.dcm"].reason == "unreadable"


def test_sniff_headerless_and_garbage() -> None:
    implicit = b"\x08\x00\x00\x00\x04\x00\x00\x00\x80\x00\x00\x00"  # (0008,0000) UL 4, implicit VR
    explicit = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"
    assert sniff(implicit + b"\x00" * 200) is False
    assert sniff(explicit + b"\x00" * 200) is False
    assert sniff(b"\x00" * 128 + b"DICM") is True
    assert sniff(b"%PDF-1.7 " + b"x" * 200) is None
    assert sniff(b"\x08\x00") is None


def test_dicomdir_missing_reference_fails(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    src = get_testdata_file("DICOMDIR")
    if src is None:
        pytest.skip("pydicom's DICOMDIR test file is not installed")
    root = tmp_path / "media"
    root.mkdir()
    (root / "DICOMDIR").write_bytes(Path(src).read_bytes())
    result = discover(root)
    reasons = {r.reason for r in result.rejected}
    assert "dicomdir" in reasons
    missing = [r for r in result.rejected if r.reason == "missing-referenced-file"]
    assert missing and all(r.outcome == "failed" for r in missing)
