"""Tests of the synthetic phantom: pixels and truth boxes, headers, compression, archive, CLI.

Archives here are small (few studies, 96..160 px) so the whole file runs in seconds; the box
test draws full-size images because the visual check needs realistic rod widths.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from dicom_io.phantom import (
    LABEL_COLUMNS,
    PhantomConfig,
    PhantomError,
    PhantomSummary,
    generate_image,
    write_phantom_archive,
)
from dicom_io.phantom.__main__ import main as phantom_main
from dicom_io.phantom.header import ImageHeader, StudyHeader, build_dataset, compress, to_bytes
from dicom_io.phantom.cohort import allocate, plan_archive

SMALL = PhantomConfig(n_studies=8, seed=7, size_range=(96, 160))
SYNTAX_OF = {
    "uncompressed": ExplicitVRLittleEndian,
    "jpeg2000-lossless": JPEG2000Lossless,
    "rle-lossless": RLELossless,
}
COMMON_TAGS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName",
    "Modality", "SeriesInstanceUID", "SeriesNumber", "InstanceNumber", "SOPClassUID",
    "SOPInstanceUID", "BodyPartExamined", "ViewPosition", "PhotometricInterpretation", "Rows",
    "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "WindowCenter",
    "WindowWidth", "Manufacturer", "PatientOrientation", "ImageType", "SamplesPerPixel",
)  # fmt: skip


def _read_labels(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, PhantomSummary]:
    root = tmp_path_factory.mktemp("phantom")
    summary = write_phantom_archive(root / "archive", root / "labels.csv", SMALL)
    return root / "archive", root / "labels.csv", summary


@pytest.fixture(scope="module")
def datasets(archive: tuple[Path, Path, PhantomSummary]) -> dict[Path, pydicom.Dataset]:
    return {p: pydicom.dcmread(p) for p in sorted(archive[0].rglob("*.dcm"))}


# ---------------------------------------------------------------- determinism


def test_same_config_regenerates_archive_bit_for_bit(
    archive: tuple[Path, Path, PhantomSummary], tmp_path: Path
) -> None:
    out, labels, _ = archive
    write_phantom_archive(tmp_path / "again", tmp_path / "labels.csv", SMALL)
    first, second = _tree_bytes(out), _tree_bytes(tmp_path / "again")
    assert list(first) == list(second)
    assert all(first[name] == second[name] for name in first)
    assert labels.read_bytes() == (tmp_path / "labels.csv").read_bytes()


def test_another_seed_gives_other_uids_and_pixels(
    archive: tuple[Path, Path, PhantomSummary], tmp_path: Path
) -> None:
    other = PhantomConfig(n_studies=2, seed=8, size_range=(96, 160))
    write_phantom_archive(tmp_path / "other", tmp_path / "other.csv", other)
    ours = {row["SOPInstanceUID"] for row in _read_labels(archive[1])}
    theirs = {row["SOPInstanceUID"] for row in _read_labels(tmp_path / "other.csv")}
    assert ours.isdisjoint(theirs)
    a = generate_image(np.random.default_rng(1), positive=True, shape=(128, 128))
    b = generate_image(np.random.default_rng(2), positive=True, shape=(128, 128))
    assert not np.array_equal(a.pixels, b.pixels)


# ---------------------------------------------------------------- labels and archive


def test_labels_match_files(
    archive: tuple[Path, Path, PhantomSummary], datasets: dict[Path, pydicom.Dataset]
) -> None:
    out, labels, summary = archive
    rows = _read_labels(labels)
    assert tuple(rows[0]) == LABEL_COLUMNS
    by_sop = {ds.SOPInstanceUID: ds for ds in datasets.values()}
    assert {row["SOPInstanceUID"] for row in rows} == set(by_sop)
    assert len(by_sop) == len(datasets) == summary.n_images
    for row in rows:
        ds = by_sop[row["SOPInstanceUID"]]
        assert row["StudyInstanceUID"] == ds.StudyInstanceUID
        assert row["SeriesInstanceUID"] == ds.SeriesInstanceUID
        assert row["PatientID"] == ds.PatientID
        assert row["label"] in ("fracture", "normal")
        coords = [row[k] for k in ("x0", "y0", "x1", "y1")]
        if row["label"] == "normal":
            assert coords == ["", "", "", ""]
            assert sum(r["SOPInstanceUID"] == row["SOPInstanceUID"] for r in rows) == 1
        else:
            x0, y0, x1, y1 = map(int, coords)
            assert 0 <= x0 < x1 <= ds.Columns and 0 <= y0 < y1 <= ds.Rows
    assert sum(row["label"] == "fracture" for row in rows) == summary.n_boxes


def test_layout_one_series_per_view_and_one_patient_per_study(
    archive: tuple[Path, Path, PhantomSummary], datasets: dict[Path, pydicom.Dataset]
) -> None:
    out, _, summary = archive
    studies: dict[str, set[str]] = {}
    for path, ds in datasets.items():
        patient, study_dir, series_dir, name = path.relative_to(out).parts
        assert (patient, study_dir, series_dir, name) == (
            ds.PatientID, f"{ds.StudyDate}_{ds.AccessionNumber}", str(ds.SeriesNumber), "1.dcm"
        )
        studies.setdefault(ds.StudyInstanceUID, set()).add(ds.PatientID)
        assert str(ds.PatientName).startswith("PHANTOM^")
    assert len(studies) == summary.n_studies == SMALL.n_studies
    assert all(len(patients) == 1 for patients in studies.values())
    series = [ds.SeriesInstanceUID for ds in datasets.values()]
    assert len(series) == len(set(series))


def test_study_positive_iff_an_image_has_a_fracture(archive: tuple[Path, Path, PhantomSummary]) -> None:
    _, labels, summary = archive
    positive: dict[str, bool] = {}
    for row in _read_labels(labels):
        study = row["StudyInstanceUID"]
        positive[study] = positive.get(study, False) or row["label"] == "fracture"
    assert sum(positive.values()) == summary.n_positive_studies == round(0.4 * SMALL.n_studies)


def test_positive_fraction_follows_config_over_many_studies() -> None:
    for fraction in (0.4, 0.25):
        config = PhantomConfig(n_studies=300, seed=3, positive_fraction=fraction)
        plans = plan_archive(config)
        share = sum(p.positive for p in plans) / len(plans)
        assert abs(share - fraction) < 0.01
        views = [len(p.views) for p in plans]
        assert min(views) == 1 and max(views) == 3
        patients = {p.patient for p in plans}
        assert 0.7 * len(plans) < len(patients) < len(plans)  # some follow-up studies


def test_allocate_rounds_exactly() -> None:
    labels = allocate(np.random.default_rng(0), 50, (0.1, 0.8, 0.1))
    assert sorted(labels) == [0] * 5 + [1] * 40 + [2] * 5
    assert labels != sorted(labels)


def test_non_empty_output_is_refused_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "archive"
    config = PhantomConfig(n_studies=2, seed=1, size_range=(96, 128))
    write_phantom_archive(out, tmp_path / "a.csv", config)
    with pytest.raises(PhantomError, match="is not empty"):
        write_phantom_archive(out, tmp_path / "a.csv", config)
    stale = out / "OLD" / "x" / "1" / "1.dcm"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    write_phantom_archive(out, tmp_path / "b.csv", config, overwrite=True)
    assert not (out / "OLD").exists()
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


# ---------------------------------------------------------------- headers


def test_headers_have_required_tags_and_modality_specific_spacing(
    archive: tuple[Path, Path, PhantomSummary], datasets: dict[Path, pydicom.Dataset]
) -> None:
    summary = archive[2]
    seen = {"CR": 0, "DX": 0}
    for path, ds in datasets.items():
        with path.open("rb") as handle:
            assert handle.read(132)[128:] == b"DICM"
        for tag in COMMON_TAGS:
            assert tag in ds, f"{path} lacks {tag}"
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.ImplementationClassUID
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
        assert ds.BodyPartExamined in ("SHOULDER", "ARM")
        assert list(ds.ImageType)[:2] == ["ORIGINAL", "PRIMARY"]
        seen[ds.Modality] += 1
        if ds.Modality == "DX":
            assert ds.SOPClassUID == DigitalXRayImageStorageForPresentation
            assert ds.PresentationIntentType == "FOR PRESENTATION"
            assert "PixelSpacing" not in ds and "DetectorType" in ds
            spacing = ds.ImagerPixelSpacing
            assert ds.ImageLaterality in ("L", "R") and "AnatomicRegionSequence" in ds
        else:
            assert ds.Modality == "CR" and ds.SOPClassUID == ComputedRadiographyImageStorage
            assert "ImagerPixelSpacing" not in ds
            spacing = ds.PixelSpacing
            assert ds.Laterality in ("L", "R")
        assert all(0.1 <= float(s) <= 0.2 for s in spacing) and len(spacing) == 2
    assert seen == dict(summary.modalities) and all(seen.values())


def test_monochrome1_share_and_window_in_stored_space(
    archive: tuple[Path, Path, PhantomSummary], datasets: dict[Path, pydicom.Dataset]
) -> None:
    summary = archive[2]
    inverted = [ds for ds in datasets.values() if ds.PhotometricInterpretation == "MONOCHROME1"]
    assert len(inverted) == summary.n_monochrome1 == round(summary.n_images / 3)
    for ds in datasets.values():
        stored = ds.pixel_array.astype(np.float64)
        low = float(ds.WindowCenter) - float(ds.WindowWidth) / 2
        high = float(ds.WindowCenter) + float(ds.WindowWidth) / 2
        # A viewer applies the window to stored values before MONOCHROME1 inversion, so the
        # window must cover the stored tissue-to-bone range (not the linear one) and not much
        # more: a centre left in linear space would clip the background or the bone.
        assert np.mean((stored >= low) & (stored <= high)) > 0.98
        span = np.percentile(stored, 99.9) - np.percentile(stored, 0.1)
        assert high - low < 1.3 * span + 100
        expected = "INVERSE" if ds.PhotometricInterpretation == "MONOCHROME1" else "IDENTITY"
        assert ds.PresentationLUTShape == expected


def _headers(modality: str, compression: str, monochrome1: bool) -> tuple[StudyHeader, ImageHeader]:
    study = StudyHeader(
        "PHANTOM^Anna", "PH0000001", "19700101", "F", "1.2.826.0.1.3680043.8.498.1",
        "20240102", "101500", "A24000001", "000001", "REFERRER^Eva", modality, "ARM", "R",
        f"{modality}-ROOM-1", "SCINTILLATOR",
    )  # fmt: skip
    image = ImageHeader(
        "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3", 1, "101600", "AP",
        monochrome1, 0.15, 60.0, compression,
    )  # fmt: skip
    return study, image


@pytest.mark.parametrize("compression", ["uncompressed", "jpeg2000-lossless", "rle-lossless"])
@pytest.mark.parametrize("monochrome1", [False, True], ids=["mono2", "mono1"])
def test_compression_round_trips_exactly(compression: str, monochrome1: bool, tmp_path: Path) -> None:
    image = generate_image(np.random.default_rng(11), positive=True, shape=(150, 170))
    assert image.pixels.max() > 2000  # bone present, so the high byte is exercised
    study, header = _headers("DX", compression, monochrome1)
    ds = build_dataset(study, header, image.pixels)
    compress(ds, compression)
    path = tmp_path / "x.dcm"
    path.write_bytes(to_bytes(ds))
    back = pydicom.dcmread(path)
    assert back.file_meta.TransferSyntaxUID == SYNTAX_OF[compression]
    assert back.SOPInstanceUID == header.sop_uid
    expected = 4095 - image.pixels if monochrome1 else image.pixels
    assert back.pixel_array.dtype == np.uint16
    np.testing.assert_array_equal(back.pixel_array, expected)


def test_archive_files_use_the_configured_compressions(
    archive: tuple[Path, Path, PhantomSummary], datasets: dict[Path, pydicom.Dataset]
) -> None:
    summary = archive[2]
    found: dict[str, int] = {}
    for ds in datasets.values():
        kind = next(k for k, uid in SYNTAX_OF.items() if uid == ds.file_meta.TransferSyntaxUID)
        found[kind] = found.get(kind, 0) + 1
        assert int(ds.pixel_array.max()) <= 4095
    assert found == dict(summary.compressions)
    assert found.get("jpeg2000-lossless", 0) > found.get("uncompressed", 0)


def test_build_dataset_rejects_bad_pixels() -> None:
    study, header = _headers("CR", "uncompressed", False)
    with pytest.raises(PhantomError, match="uint16"):
        build_dataset(study, header, np.zeros((10, 10), dtype=np.float32))
    with pytest.raises(PhantomError, match="0..4095"):
        build_dataset(study, header, np.full((10, 10), 5000, dtype=np.uint16))


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_dciodvfy_finds_no_errors(datasets: dict[Path, pydicom.Dataset]) -> None:
    picked: dict[str, Path] = {}
    for path, ds in datasets.items():
        picked.setdefault(ds.Modality, path)
    for path in picked.values():
        result = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path}: {errors}"


# ---------------------------------------------------------------- pixels and boxes


def _deficit(pixels: np.ndarray) -> np.ndarray:
    """Pixels much darker than a closing of the image: thin dark lines such as a gap."""
    smooth = cv2.GaussianBlur(pixels.astype(np.float32), (0, 0), 1.0)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (11, 11))
    closed = cv2.morphologyEx(smooth, cv2.MORPH_CLOSE, kernel)
    return np.asarray((closed - smooth) > 250)


def test_boxes_surround_a_real_drop_in_bone_density() -> None:
    checked = 0
    for seed in range(60):
        image = generate_image(np.random.default_rng(seed), positive=True, size_range=(384, 512))
        if image.n_rods != 1:  # two touching rods leave a dark V that is not a fracture
            continue
        dark = _deficit(image.pixels)
        rows, cols = dark.shape
        covered = np.zeros_like(dark)
        for x0, y0, x1, y1 in image.boxes:
            assert 0 <= x0 < x1 <= cols and 0 <= y0 < y1 <= rows
            covered[y0:y1, x0:x1] = True
        for x0, y0, x1, y1 in image.boxes:
            h, w = y1 - y0, x1 - x0
            around = np.zeros_like(dark)
            around[max(y0 - h, 0) : y1 + h, max(x0 - w, 0) : x1 + w] = True
            assert (dark & around & covered).sum() >= 0.95 * (dark & around).sum()
            ys, xs = np.nonzero(dark[y0:y1, x0:x1])
            assert ys.size > 50, "no drop inside the truth box"
            margins = (xs.min(), ys.min(), w - 1 - xs.max(), h - 1 - ys.max())
            assert all(2 <= m <= 12 for m in margins), margins  # padded 4..8 px, not loose
        checked += 1
        if checked == 12:
            break
    assert checked == 12


def test_image_statistics_follow_the_spec() -> None:
    rng = np.random.default_rng(0)
    positives = [generate_image(rng, positive=True, size_range=(64, 96)) for _ in range(300)]
    negatives = [generate_image(rng, positive=False, size_range=(64, 96)) for _ in range(300)]
    assert all(len(im.boxes) == im.n_fractures in (1, 2) and im.distractor is None for im in positives)
    assert all(im.n_fractures == 0 and not im.boxes for im in negatives)
    two = sum(im.n_fractures == 2 for im in positives) / 300
    distracted = [im.distractor for im in negatives if im.distractor is not None]
    assert 0.05 < two < 0.16 and 0.13 < len(distracted) / 300 < 0.28
    assert set(distracted) == {"canal", "dot"}
    for im in positives + negatives:
        assert im.pixels.dtype == np.uint16 and im.pixels.max() <= 4095
        assert 64 <= min(im.pixels.shape) and max(im.pixels.shape) <= 96
    assert len({im.pixels.shape for im in positives}) > 50


def test_generate_image_is_deterministic_and_validates_shape() -> None:
    a = generate_image(np.random.default_rng(5), positive=True, shape=(200, 300))
    b = generate_image(np.random.default_rng(5), positive=True, shape=(200, 300))
    assert np.array_equal(a.pixels, b.pixels) and a.boxes == b.boxes and a.pixels.shape == (200, 300)
    with pytest.raises(PhantomError, match="64..4096"):
        generate_image(np.random.default_rng(5), positive=True, shape=(32, 300))


# ---------------------------------------------------------------- config and CLI


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_studies", 0, "n_studies"),
        ("positive_fraction", 1.5, "positive_fraction"),
        ("size_range", (500, 400), "size_range"),
        ("views_range", (1, 4), "views_range"),
        ("compression_mix", (0.5, 0.5, 0.5), "sum to 1"),
        ("uid_prefix", "1.2.3", "uid_prefix"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(PhantomError, match=message):
        PhantomConfig(**{field: value})  # type: ignore[arg-type]


def test_module_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = [str(out), "--labels", str(tmp_path / "l.csv"), "--studies", "2", "--seed", "4", "--size", "96", "128"]
    assert phantom_main(argv) == 0
    assert "in 2 studies" in capsys.readouterr().out
    assert len(list(out.rglob("*.dcm"))) == len({r["SOPInstanceUID"] for r in _read_labels(tmp_path / "l.csv")})
    assert phantom_main(argv) == 2
    assert "is not empty" in capsys.readouterr().err


# ---------------------------------------------------------------- the committed sample

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
SAMPLE_CONFIG = PhantomConfig(n_studies=24, seed=20261127)


@pytest.mark.skipif(not (SAMPLE / "labels.csv").exists(), reason="sample archive not present")
def test_committed_sample_labels_match_its_files() -> None:
    rows = _read_labels(SAMPLE / "labels.csv")
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((SAMPLE / "archive").rglob("*.dcm"))]
    assert {ds.SOPInstanceUID for ds in headers} == {row["SOPInstanceUID"] for row in rows}
    assert len({ds.StudyInstanceUID for ds in headers}) == SAMPLE_CONFIG.n_studies
    assert {ds.Modality for ds in headers} == {"CR", "DX"}
    assert {ds.PhotometricInterpretation for ds in headers} == {"MONOCHROME1", "MONOCHROME2"}
    assert {ds.file_meta.TransferSyntaxUID for ds in headers} == set(SYNTAX_OF.values())


@pytest.mark.slow
@pytest.mark.skipif(not (SAMPLE / "labels.csv").exists(), reason="sample archive not present")
def test_committed_sample_regenerates_bit_for_bit(tmp_path: Path) -> None:
    write_phantom_archive(tmp_path / "archive", tmp_path / "labels.csv", SAMPLE_CONFIG)
    assert _tree_bytes(tmp_path / "archive") == _tree_bytes(SAMPLE / "archive")
    assert (tmp_path / "labels.csv").read_bytes() == (SAMPLE / "labels.csv").read_bytes()
