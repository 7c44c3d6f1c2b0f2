"""Tests for dicom_io.pixels: the decode pipeline on synthetic datasets and real files.

Real files come from pydicom and pydicom-data (see tests/dicom_io/README.md for provenance).
"""

from __future__ import annotations

import logging
import os
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import dicom_io.pixels as pixels_module
from dicom_io.errors import (
    DicomIOError,
    InvalidArgumentError,
    PixelDecodeError,
    SizeLimitError,
)
from dicom_io.pixels import (
    PixelPolicy,
    Radiograph,
    dataset_to_radiograph,
    decode_frame,
    load_radiograph,
    to_unit_range,
)

# --- synthetic datasets ---------------------------------------------------------------------


def make_ds(
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    signed: bool = False,
    frames: int | None = None,
    **elements: Any,
) -> Dataset:
    """A minimal CR-like dataset holding ``stored`` as native little-endian pixel data."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.Modality = "CR"
    shape = stored.shape[1:] if frames else stored.shape
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    if frames:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 3 if stored.ndim == (4 if frames else 3) else 1
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = stored.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    return ds


# Stored values and the unit output of window center 100.5 / width 201 (pydicom LINEAR:
# c' = 100, w' = 200, y = (x - c')/w' + 0.5 clipped), computed by hand.
RAMP = np.array([[0, 50, 100], [150, 200, 4000]], dtype=np.uint16)
RAMP_WINDOWED = np.array([[0.0, 0.25, 0.5], [0.75, 1.0, 1.0]])


def test_window_applied_with_dicom_formula() -> None:
    rg = dataset_to_radiograph(make_ds(RAMP, WindowCenter=100.5, WindowWidth=201))
    assert rg.voi_source == "window"
    np.testing.assert_allclose(rg.pixels, RAMP_WINDOWED, atol=1e-6)


def test_monochrome1_inverted_after_voi() -> None:
    rg = dataset_to_radiograph(
        make_ds(RAMP, photometric="MONOCHROME1", WindowCenter=100.5, WindowWidth=201)
    )
    np.testing.assert_allclose(rg.pixels, 1.0 - RAMP_WINDOWED, atol=1e-6)
    # Inverting the stored values first (4095 - x) would put every pixel above the window:
    # the hand-computed answer above only holds when the inversion comes after the VOI.
    assert rg.photometric == "MONOCHROME1"


def test_rescale_applied_before_window() -> None:
    # modality value = 2 * stored - 100, so stored 50, 100, 150 -> 0, 100, 200.
    stored = np.array([[50, 75], [100, 150]], dtype=np.uint16)
    rg = dataset_to_radiograph(
        make_ds(stored, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=100.5, WindowWidth=201)
    )
    np.testing.assert_allclose(rg.pixels, [[0.0, 0.25], [0.5, 1.0]], atol=1e-6)


def test_no_window_uses_percentiles() -> None:
    stored = np.arange(201, dtype=np.uint16).reshape(3, 67)
    rg = dataset_to_radiograph(make_ds(stored))
    assert rg.voi_source == "percentile"
    # 0.5 and 99.5 percentiles of 0..200 (linear interpolation) are 1 and 199.
    expected = np.clip((stored.astype(float) - 1.0) / 198.0, 0, 1)
    np.testing.assert_allclose(rg.pixels, expected, atol=1e-6)
    full = dataset_to_radiograph(make_ds(stored), PixelPolicy(percentile_window=(0, 100)))
    np.testing.assert_allclose(full.pixels, stored / 200.0, atol=1e-6)


def test_use_voi_false_ignores_window() -> None:
    ds = make_ds(RAMP, WindowCenter=100.5, WindowWidth=201)
    rg = dataset_to_radiograph(ds, PixelPolicy(use_voi=False, percentile_window=(0, 100)))
    assert rg.voi_source == "percentile"
    np.testing.assert_allclose(rg.pixels, RAMP / 4000.0, atol=1e-6)


@pytest.mark.parametrize(
    "center, width",
    [
        pytest.param(100, 0, id="width-zero"),
        pytest.param(100, -5, id="width-negative"),
        pytest.param(100, 0.5, id="width-below-one"),
        pytest.param(30000, 10, id="window-misses-all-data"),
    ],
)
def test_unusable_window_falls_back_to_percentile(center: float, width: float) -> None:
    ds = make_ds(RAMP, WindowCenter=center, WindowWidth=width)
    rg = dataset_to_radiograph(ds, PixelPolicy(percentile_window=(0, 100)))
    assert rg.voi_source == "percentile"
    np.testing.assert_allclose(rg.pixels, RAMP / 4000.0, atol=1e-6)


def _voi_lut_item(first: int, data: list[int], bits: int) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(data), first, bits]
    item.LUTData = data
    item["LUTData"].VR = "US"
    return item


def test_voi_lut_preferred_and_scaled_by_its_own_range() -> None:
    # LUT maps stored i to 1000 + 4 i (descriptor says 16 bits, data spans 1000..2020).
    lut = _voi_lut_item(0, [1000 + 4 * i for i in range(256)], 16)
    stored = np.array([[0, 51], [102, 255]], dtype=np.uint16)
    ds = make_ds(stored, bits_stored=8, WindowCenter=10, WindowWidth=20)
    ds.VOILUTSequence = Sequence([lut])
    rg = dataset_to_radiograph(ds)
    assert rg.voi_source == "voi-lut"
    np.testing.assert_allclose(rg.pixels, [[0.0, 0.2], [0.4, 1.0]], atol=1e-6)


def test_out_of_range_values_refused() -> None:
    stored = np.array([[0, 5000], [4095, 10]], dtype=np.uint16)  # 5000 needs 13 bits
    with pytest.raises(PixelDecodeError) as info:
        dataset_to_radiograph(make_ds(stored, bits_stored=12))
    assert info.value.reason == "out-of-range"
    assert "BitsStored=12" in str(info.value)


def test_signed_out_of_range_refused() -> None:
    stored = np.array([[0, -3000], [2047, -2048]], dtype=np.int16)
    with pytest.raises(PixelDecodeError) as info:
        dataset_to_radiograph(make_ds(stored, bits_stored=12, signed=True))
    assert info.value.reason == "out-of-range"


def test_signed_values_with_clear_high_bits_are_sign_extended() -> None:
    raw = np.array([[0x0FFF, 0x0800], [0x07FF, 0]], dtype=np.uint16)  # 12-bit two's complement
    frame = decode_frame(make_ds(raw, bits_stored=12, signed=True))
    np.testing.assert_array_equal(frame.array, [[-1, -2048], [2047, 0]])


def test_constant_image_refused() -> None:
    with pytest.raises(PixelDecodeError) as info:
        dataset_to_radiograph(make_ds(np.full((4, 5), 700, dtype=np.uint16)))
    assert info.value.reason == "constant-image"


def test_non_finite_rescale_refused() -> None:
    ds = make_ds(RAMP, RescaleSlope="1e308", RescaleIntercept=0)
    with pytest.raises(PixelDecodeError) as info:
        dataset_to_radiograph(ds)
    assert info.value.reason == "non-finite"


def _forged_huge() -> Dataset:
    ds = make_ds(np.array([[1, 2]], dtype=np.uint16))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 1000  # ~8.6 TB claimed, 4 bytes held
    return ds


def test_size_limit_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_decode(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("pixel data was decoded despite the size limit")

    monkeypatch.setattr(pixels_module, "pixel_array", must_not_decode)
    with pytest.raises(SizeLimitError) as info:
        dataset_to_radiograph(_forged_huge())
    message = str(info.value)
    assert info.value.reason == "too-large"
    assert f"{65535 * 65535 * 1000 * 2:,}" in message and "max_pixel_bytes" in message


def test_size_limit_from_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.dcm"
    _forged_huge().save_as(path, enforce_file_format=True)
    with pytest.raises(SizeLimitError):
        load_radiograph(path)


def test_size_limit_is_a_policy_field() -> None:
    ds = make_ds(RAMP)  # 2 x 3 x 16 bits = 12 bytes
    with pytest.raises(SizeLimitError, match="12 bytes"):
        dataset_to_radiograph(ds, PixelPolicy(max_pixel_bytes=11))
    assert dataset_to_radiograph(ds, PixelPolicy(max_pixel_bytes=12)).rows == 2


def test_truncated_pixel_data_refused() -> None:
    ds = make_ds(np.arange(64, dtype=np.uint16).reshape(8, 8))
    ds.PixelData = ds.PixelData[:50]
    with pytest.raises(PixelDecodeError) as info:
        dataset_to_radiograph(ds)
    assert info.value.reason == "decode-failed"
    assert "Explicit VR Little Endian" in str(info.value)


def test_truncated_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.dcm"
    make_ds(np.arange(4096, dtype=np.uint16).reshape(64, 64)).save_as(
        path, enforce_file_format=True
    )
    path.write_bytes(path.read_bytes()[:-3000])
    with pytest.raises(DicomIOError) as info:
        load_radiograph(path)
    assert info.value.reason in {"decode-failed", "unreadable-header", "no-pixel-data"}


def test_rgb_becomes_luma() -> None:
    rgb = np.array(
        [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]], dtype=np.uint8
    )
    rg = dataset_to_radiograph(make_ds(rgb, photometric="RGB", bits_stored=8))
    assert rg.voi_source == "none" and rg.pixels.shape == (2, 2)
    np.testing.assert_allclose(rg.pixels, [[0.299, 0.587], [0.114, 1.0]], atol=1e-6)


def test_multi_frame_policy() -> None:
    frames = np.zeros((3, 4, 4), dtype=np.uint16)
    for k in range(3):
        frames[k, k, k] = 1000  # frame k is bright at (k, k)
    ds = make_ds(frames, frames=3)
    first = dataset_to_radiograph(ds)
    middle = dataset_to_radiograph(ds, PixelPolicy(frame="middle"))
    assert (first.frame_index, first.n_frames) == (0, 3)
    assert (middle.frame_index, middle.n_frames) == (1, 3)
    assert np.unravel_index(first.pixels.argmax(), (4, 4)) == (0, 0)
    assert np.unravel_index(middle.pixels.argmax(), (4, 4)) == (1, 1)


def test_radiograph_fields_from_header() -> None:
    ds = make_ds(RAMP, PixelSpacing=[0.1, 0.2])
    rg = dataset_to_radiograph(ds)
    assert (rg.sop_instance_uid, rg.series_instance_uid, rg.study_instance_uid) == (
        ds.SOPInstanceUID,
        ds.SeriesInstanceUID,
        ds.StudyInstanceUID,
    )
    assert (rg.rows, rg.cols) == (2, 3) and rg.pixels.dtype == np.float32
    assert rg.spacing.source == "PixelSpacing" and rg.spacing.col_mm == pytest.approx(0.2)
    assert not rg.pixels.flags.writeable


def test_missing_pixel_data_and_float_pixel_data() -> None:
    ds = make_ds(RAMP)
    del ds.PixelData
    with pytest.raises(PixelDecodeError) as info:
        dataset_to_radiograph(ds)
    assert info.value.reason == "no-pixel-data"
    ds.FloatPixelData = np.zeros(6, dtype=np.float32).tobytes()
    with pytest.raises(PixelDecodeError) as info:
        dataset_to_radiograph(ds)
    assert info.value.reason == "unsupported-pixel-data"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        pytest.param({"frame": "last"}, "frame", id="frame"),
        pytest.param({"percentile_window": (99.0, 1.0)}, "percentile_window", id="window-order"),
        pytest.param({"percentile_window": (0.0, 101.0)}, "percentile_window", id="window-range"),
        pytest.param({"use_voi": "yes"}, "use_voi", id="use-voi"),
        pytest.param({"max_pixel_bytes": 0}, "max_pixel_bytes", id="max-bytes"),
        pytest.param({"max_header_bytes": True}, "max_header_bytes must be a positive int, got True",
                     id="max-header-bytes"),
    ],
)
def test_policy_validation(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidArgumentError, match=fragment):
        PixelPolicy(**kwargs)


def test_radiograph_validation() -> None:
    good: dict[str, Any] = dict(
        pixels=np.zeros((2, 3), dtype=np.float32),
        sop_instance_uid="1",
        series_instance_uid="2",
        study_instance_uid="3",
        rows=2,
        cols=3,
        spacing=pixels_module.spacing_from_dataset(Dataset()),
        photometric="MONOCHROME2",
        frame_index=0,
        n_frames=1,
        voi_source="window",
    )
    Radiograph(**good)
    for change, fragment in [
        ({"pixels": np.zeros((2, 3))}, "float32"),
        ({"rows": 3}, "shape"),
        ({"pixels": np.full((2, 3), 1.5, dtype=np.float32)}, r"\[0, 1\]"),
        ({"frame_index": 1}, "frame_index"),
        ({"voi_source": "auto"}, "voi_source"),
    ]:
        with pytest.raises(InvalidArgumentError, match=fragment):
            Radiograph(**{**good, **change})


# --- real files -----------------------------------------------------------------------------


def real_file(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data)")
    return str(path)


@pytest.fixture(scope="module")
def rg3() -> Radiograph:
    return load_radiograph(real_file("RG3_UNCR.dcm"))


def test_rg3_bone_bright(rg3: Radiograph) -> None:
    # Distal tibia, MONOCHROME1: the tibial shaft (cols 800..960 in rows 600..1000) against
    # direct-exposure air beside the leg (cols 520..680) found by looking at the image.
    band = rg3.pixels[600:1000]
    bone = float(band[:, 800:960].mean())
    air = float(band[:, 520:680].mean())
    assert rg3.voi_source == "window" and rg3.photometric == "MONOCHROME1"
    assert (rg3.rows, rg3.cols) == (1760, 1760)
    assert bone > air + 0.4, (bone, air)


@pytest.mark.parametrize("name", ["RG3_UNCR.dcm", "RG1_UNCR.dcm"])
@pytest.mark.parametrize("use_voi", [True, False], ids=["file-voi", "percentile"])
def test_monochrome1_output_is_one_minus_uninverted(name: str, use_voi: bool) -> None:
    policy = PixelPolicy(use_voi=use_voi)
    ds = pydicom.dcmread(real_file(name))
    rg = dataset_to_radiograph(ds, policy)
    unit, source = to_unit_range(decode_frame(ds, policy).array, ds, policy)
    assert source == rg.voi_source == ("window" if use_voi else "percentile")
    np.testing.assert_allclose(rg.pixels, 1.0 - unit, atol=1e-6)


@pytest.mark.parametrize(
    "lossless, reference",
    [("RG3_J2KR.dcm", "RG3_UNCR.dcm"), ("RG1_J2KR.dcm", "RG1_UNCR.dcm")],
    ids=["RG3", "RG1"],
)
def test_jpeg2000_lossless_identical(lossless: str, reference: str) -> None:
    a = load_radiograph(real_file(lossless))
    b = load_radiograph(real_file(reference))
    assert np.array_equal(a.pixels, b.pixels)
    assert a.sop_instance_uid and a.spacing == b.spacing


def test_jpeg2000_lossy_close(rg3: Radiograph) -> None:
    lossy = load_radiograph(real_file("RG3_J2KI.dcm"))
    diff = np.abs(lossy.pixels - rg3.pixels)
    assert 0 < float(diff.mean()) < 0.01 and float(diff.max()) < 0.1


def test_small_cr_from_dicomdir_set() -> None:
    rg = load_radiograph(real_file("dicomdirtests/77654033/CR1/6154"))
    assert rg.photometric == "MONOCHROME1" and rg.pixels.shape == (16, 16)


def test_file_without_meta_gets_native_syntax() -> None:
    rg = load_radiograph(real_file("OT-PAL-8-face.dcm"))
    assert rg.photometric == "PALETTE COLOR" and rg.voi_source == "none"


# --- every bundled file: a Radiograph or a DicomIOError with a reason, never a hang --------

KNOWN_REASONS = {
    "unreadable",
    "unreadable-header",
    "no-pixel-data",
    "unsupported-pixel-data",
    "bad-pixel-header",
    "unsupported-photometric",
    "decode-failed",
    "out-of-range",
    "bad-modality-lut",
    "bad-palette",
    "non-finite",
    "constant-image",
    "too-large",
    "truncated-pixel-data",
    "frame-header-mismatch",
    "bad-frame-header",
    "header-too-large",
    "pixel-length-mismatch",
}


def _bundled_files() -> list[Any]:
    files = sorted({f for f in get_testdata_files() if os.path.isfile(f)})
    params = []
    for f in files:
        parts = Path(f).parts
        source = "pydicom-data" if "data_store" in parts else "pydicom"
        start = parts.index("dicomdirtests") if "dicomdirtests" in parts else len(parts) - 1
        tail = "/".join(parts[start:])
        params.append(pytest.param(f, id=f"{source}:{tail}"))
    return params


BUNDLED = _bundled_files()


def test_both_sources_enumerated() -> None:
    ids = [p.id for p in BUNDLED]
    assert sum(i.startswith("pydicom:") for i in ids) > 150
    if get_testdata_file("RG3_UNCR.dcm") is None:
        pytest.skip("pydicom-data is not installed")
    assert sum(i.startswith("pydicom-data:") for i in ids) > 50


@pytest.fixture
def no_hang() -> Iterator[None]:
    def alarm(signum: int, frame: object) -> None:
        raise TimeoutError("decoding took more than 30 s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(30)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("path", BUNDLED)
def test_bundled_file_yields_radiograph_or_reason(path: str, no_hang: None) -> None:
    logging.disable(logging.CRITICAL)  # pydicom logs decoder trouble for the broken files
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rg = load_radiograph(path)
    except DicomIOError as exc:
        assert exc.reason in KNOWN_REASONS, (exc.reason, str(exc))
        return
    finally:
        logging.disable(logging.NOTSET)
    assert rg.pixels.dtype == np.float32 and rg.pixels.shape == (rg.rows, rg.cols)
    assert np.isfinite(rg.pixels).all()
    assert 0.0 <= rg.pixels.min() < rg.pixels.max() <= 1.0


@pytest.mark.parametrize(
    "name, reason",
    [
        ("MR_truncated.dcm", "decode-failed"),
        # its SIZ says 1024 x 3722445056 pixels: refused before openjpeg allocates
        ("JPEG2000-embedded-sequence-delimiter.dcm", "frame-header-mismatch"),
        ("rtplan.dcm", "no-pixel-data"),
        ("emri_small_jpeg_2k_lossless_too_short.dcm", "truncated-pixel-data"),
    ],
)
def test_broken_real_files_give_their_reason(name: str, reason: str) -> None:
    with pytest.raises(DicomIOError) as info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_radiograph(real_file(name))
    assert info.value.reason == reason
