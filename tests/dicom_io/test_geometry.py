"""Tests for dicom_io.geometry: the one resize convention, box mapping and pixel spacing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicom_io.errors import DicomIOError, GeometryError
from dicom_io.geometry import (
    PixelSpacingInfo,
    ResizeMode,
    ResizeSpec,
    resize_image,
    spacing_from_dataset,
)

# (rows, cols, size): portrait, landscape, square, odd sizes, enlarging and shrinking.
SHAPES = [
    pytest.param(200, 400, 100, id="landscape-200x400-to-100"),
    pytest.param(301, 101, 64, id="portrait-odd-301x101-to-64"),
    pytest.param(517, 383, 224, id="portrait-odd-517x383-to-224"),
    pytest.param(97, 131, 448, id="landscape-odd-enlarge-97x131-to-448"),
    pytest.param(250, 250, 224, id="square-250-to-224"),
    pytest.param(7, 3, 5, id="tiny-7x3-to-5"),
]
MODES = [pytest.param(m, id=m.value) for m in ResizeMode]


# --- the convention: known answers computed by hand -----------------------------------------


def test_squash_known_answer() -> None:
    spec = ResizeSpec(src_rows=200, src_cols=400, size=100, mode="squash")
    assert (spec.scale_x, spec.scale_y) == (0.25, 0.5)
    assert (spec.new_w, spec.new_h, spec.pad_left, spec.pad_top) == (100, 100, 0, 0)
    # model pixels x 10..50, y 20..60 -> cols 40..200, rows 40..120
    assert spec.box_to_source((0.1, 0.2, 0.5, 0.6)) == pytest.approx((40.0, 40.0, 200.0, 120.0))
    assert spec.source_to_box(40, 40, 200, 120) == pytest.approx((0.1, 0.2, 0.5, 0.6))


def test_letterbox_known_answer_landscape() -> None:
    spec = ResizeSpec(200, 400, 100, ResizeMode.LETTERBOX)
    # s = min(100/200, 100/400) = 0.25 -> content 50 x 100 at pad_top (100-50)//2 = 25
    assert (spec.new_h, spec.new_w, spec.pad_top, spec.pad_left) == (50, 100, 25, 0)
    assert (spec.scale_x, spec.scale_y) == (0.25, 0.25)
    # y 30..70 model px -> rows (30-25)/0.25 = 20 .. (70-25)/0.25 = 180
    assert spec.box_to_source((0.1, 0.3, 0.5, 0.7)) == pytest.approx((40.0, 20.0, 200.0, 180.0))


def test_letterbox_known_answer_portrait_odd() -> None:
    spec = ResizeSpec(301, 101, 64, "letterbox")
    # s = 64/301; new_w = round(101*64/301) = round(21.47) = 21; pad_left = (64-21)//2 = 21
    assert (spec.new_h, spec.new_w, spec.pad_top, spec.pad_left) == (64, 21, 0, 21)
    assert spec.scale_x == pytest.approx(21 / 101)
    assert spec.scale_y == pytest.approx(64 / 301)
    # The content's own box is the whole image.
    assert spec.box_to_source((21 / 64, 0.0, 42 / 64, 1.0)) == pytest.approx((0, 0, 101, 301))
    assert spec.source_to_box(0, 0, 101, 301) == pytest.approx((21 / 64, 0.0, 42 / 64, 1.0))


def test_letterbox_uses_python_round() -> None:
    # 10 * (10/40) = 2.5 exactly: Python's round gives 2 (round half to even), the project's rule.
    spec = ResizeSpec(src_rows=40, src_cols=10, size=10, mode="letterbox")
    assert (spec.new_h, spec.new_w, spec.pad_left) == (10, 2, 4)


def test_letterbox_content_never_rounds_to_zero() -> None:
    spec = ResizeSpec(src_rows=1, src_cols=1000, size=64, mode="letterbox")
    assert spec.new_h == 1 and spec.new_w == 64


def test_padding_maps_to_image_edge() -> None:
    spec = ResizeSpec(301, 101, 64, "letterbox")  # 21 zero columns each side
    left_pad = spec.box_to_source((0.0, 0.1, 20 / 64, 0.9))
    assert left_pad[0] == 0.0 and left_pad[2] == 0.0  # wholly in padding: collapses onto col 0
    right_pad = spec.box_to_source((50 / 64, 0.1, 1.0, 0.9))
    assert right_pad[0] == 101.0 and right_pad[2] == 101.0
    straddling = spec.box_to_source((0.0, 0.0, 1.0, 1.0))
    assert straddling == pytest.approx((0.0, 0.0, 101.0, 301.0))


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rows, cols, size", SHAPES)
def test_source_box_round_trip(rows: int, cols: int, size: int, mode: ResizeMode) -> None:
    spec = ResizeSpec(rows, cols, size, mode)
    rng = np.random.default_rng(rows * 1000 + cols)
    for _ in range(50):
        c0, c1 = np.sort(rng.uniform(0, cols, 2))
        r0, r1 = np.sort(rng.uniform(0, rows, 2))
        if c1 - c0 < 1e-3 or r1 - r0 < 1e-3:
            continue
        box = spec.source_to_box(c0, r0, c1, r1)
        assert all(0.0 <= v <= 1.0 for v in box)
        assert spec.box_to_source(box) == pytest.approx((c0, r0, c1, r1), abs=1e-9)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rows, cols, size", SHAPES)
def test_model_box_round_trip_inside_content(
    rows: int, cols: int, size: int, mode: ResizeMode
) -> None:
    spec = ResizeSpec(rows, cols, size, mode)
    x_lo, x_hi = spec.pad_left / size, (spec.pad_left + spec.new_w) / size
    y_lo, y_hi = spec.pad_top / size, (spec.pad_top + spec.new_h) / size
    rng = np.random.default_rng(size)
    for _ in range(50):
        x0, x1 = np.sort(rng.uniform(x_lo, x_hi, 2))
        y0, y1 = np.sort(rng.uniform(y_lo, y_hi, 2))
        if x1 - x0 < 1e-6 or y1 - y0 < 1e-6:
            continue
        source = spec.box_to_source((x0, y0, x1, y1))
        assert spec.source_to_box(*source) == pytest.approx((x0, y0, x1, y1), abs=1e-9)


@pytest.mark.parametrize("mode", MODES)
def test_point_round_trip(mode: ResizeMode) -> None:
    spec = ResizeSpec(517, 383, 224, mode)
    x, y = spec.point_from_source(100.25, 400.5)
    assert spec.point_to_source(x, y) == pytest.approx((100.25, 400.5))


def test_source_box_partly_outside_is_clipped_and_wholly_outside_raises() -> None:
    spec = ResizeSpec(100, 200, 50, "squash")
    assert spec.source_to_box(-10, -5, 50, 120) == pytest.approx((0.0, 0.0, 0.25, 1.0))
    with pytest.raises(GeometryError, match="outside"):
        spec.source_to_box(210, 10, 250, 20)


# --- the reference resize puts things where the mapping says ---------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rows, cols, size", [(301, 517, 128), (517, 301, 128), (90, 150, 256)])
def test_bright_rectangle_lands_at_mapped_box(
    rows: int, cols: int, size: int, mode: ResizeMode
) -> None:
    spec = ResizeSpec(rows, cols, size, mode)
    image = np.zeros((rows, cols), dtype=np.float32)
    c0, r0, c1, r1 = int(cols * 0.3), int(rows * 0.55), int(cols * 0.7), int(rows * 0.8)
    image[r0:r1, c0:c1] = 1.0  # pixels c0..c1-1 cover pixel edges c0..c1
    out = resize_image(image, spec)
    assert out.shape == (size, size) and out.dtype == np.float32
    hit_rows, hit_cols = np.nonzero(out > 0.5)
    found = (hit_cols.min(), hit_rows.min(), hit_cols.max() + 1, hit_rows.max() + 1)
    expected = np.array(spec.source_to_box(c0, r0, c1, r1)) * size
    assert np.abs(np.array(found, dtype=float) - expected).max() <= 1.0


def test_resize_letterbox_padding_is_zero_and_content_filled() -> None:
    spec = ResizeSpec(100, 300, 60, "letterbox")  # content 20 x 60 at pad_top 20
    out = resize_image(np.full((100, 300), 0.7, dtype=np.float32), spec)
    assert np.all(out[: spec.pad_top] == 0) and np.all(out[spec.pad_top + spec.new_h :] == 0)
    assert np.allclose(out[spec.pad_top : spec.pad_top + spec.new_h], 0.7)


def test_resize_interpolation_follows_convention() -> None:
    import cv2

    assert ResizeSpec(100, 100, 50, "squash").interpolation == cv2.INTER_AREA
    assert ResizeSpec(10, 20, 50, "squash").interpolation == cv2.INTER_LINEAR
    assert ResizeSpec(100, 20, 50, "squash").interpolation == cv2.INTER_AREA  # one axis shrinks
    # Shrinking uses area averaging: a 2x2 checkerboard averages to 0.5 exactly.
    board = np.indices((64, 64)).sum(axis=0) % 2
    assert np.allclose(resize_image(board, ResizeSpec(64, 64, 32, "squash")), 0.5)


def test_resize_rejects_wrong_shape() -> None:
    with pytest.raises(GeometryError, match=r"\(40, 30\)"):
        resize_image(np.zeros((30, 40)), ResizeSpec(40, 30, 16))


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "box",
    [
        pytest.param((0.1, 0.1, 0.5), id="three-numbers"),
        pytest.param((0.1, 0.1, float("nan"), 0.5), id="nan"),
        pytest.param((0.1, 0.1, float("inf"), 0.5), id="inf"),
        pytest.param((0.5, 0.1, 0.5, 0.6), id="zero-width"),
        pytest.param((0.6, 0.1, 0.5, 0.6), id="x1-before-x0"),
        pytest.param((0.1, 0.6, 0.5, 0.2), id="y1-before-y0"),
        pytest.param((-0.01, 0.1, 0.5, 0.6), id="below-zero"),
        pytest.param((0.1, 0.1, 1.01, 0.6), id="above-one"),
        pytest.param((10, 10, 50, 60), id="pixels-not-normalised"),
        pytest.param("abcd", id="text"),
    ],
)
def test_box_to_source_rejects_malformed(box: object) -> None:
    spec = ResizeSpec(100, 100, 50)
    with pytest.raises(GeometryError) as info:
        spec.box_to_source(box)
    assert isinstance(info.value, DicomIOError) and info.value.reason == "bad-geometry"


def test_box_within_tolerance_is_clamped() -> None:
    spec = ResizeSpec(100, 200, 50)
    assert spec.box_to_source((-1e-7, 0.0, 1 + 1e-7, 1.0)) == (0.0, 0.0, 200.0, 100.0)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        pytest.param({"src_rows": 0}, "src_rows", id="zero-rows"),
        pytest.param({"src_cols": -3}, "src_cols", id="negative-cols"),
        pytest.param({"size": 2.5}, "size", id="float-size"),
        pytest.param({"size": True}, "size", id="bool-size"),
        pytest.param({"mode": "stretch"}, "squash", id="unknown-mode"),
    ],
)
def test_resize_spec_validation(kwargs: dict[str, object], fragment: str) -> None:
    args: dict[str, object] = {"src_rows": 10, "src_cols": 10, "size": 5, "mode": "squash"}
    args.update(kwargs)
    with pytest.raises(GeometryError, match=fragment):
        ResizeSpec(**args)  # type: ignore[arg-type]


def test_resize_spec_accepts_enum_or_string_and_numpy_ints() -> None:
    spec = ResizeSpec(np.int64(10), np.int32(20), 8, "letterbox")
    assert spec.mode is ResizeMode.LETTERBOX and type(spec.src_rows) is int
    assert ResizeSpec(10, 20, 8, ResizeMode.LETTERBOX) == spec


# --- pixel spacing --------------------------------------------------------------------------


def _ds(**values: object) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_pixel_spacing_wins_over_imager() -> None:
    info = spacing_from_dataset(_ds(PixelSpacing=[0.15, 0.2], ImagerPixelSpacing=[0.3, 0.3]))
    assert info == PixelSpacingInfo(0.15, 0.2, "PixelSpacing")
    assert info.is_patient_plane


def test_zero_pixel_spacing_counts_as_absent() -> None:
    info = spacing_from_dataset(_ds(PixelSpacing=[0, 0], ImagerPixelSpacing=[0.2, 0.1]))
    assert info == PixelSpacingInfo(0.2, 0.1, "ImagerPixelSpacing")
    assert not info.is_patient_plane


def test_imager_spacing_corrected_by_magnification() -> None:
    info = spacing_from_dataset(
        _ds(ImagerPixelSpacing=[0.2, 0.15], EstimatedRadiographicMagnificationFactor=1.25)
    )
    assert info.source == "ImagerPixelSpacing/magnification"
    assert (info.row_mm, info.col_mm) == pytest.approx((0.16, 0.12))


@pytest.mark.parametrize("factor", [0, -1.1], ids=["zero", "negative"])
def test_unusable_magnification_leaves_detector_plane(factor: float) -> None:
    info = spacing_from_dataset(
        _ds(ImagerPixelSpacing=[0.2, 0.15], EstimatedRadiographicMagnificationFactor=factor)
    )
    assert info == PixelSpacingInfo(0.2, 0.15, "ImagerPixelSpacing")


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="no-spacing"),
        pytest.param({"PixelSpacing": [0.1]}, id="one-value"),
        pytest.param({"ImagerPixelSpacing": [0.1, -0.1]}, id="negative-imager"),
    ],
)
def test_no_usable_spacing(values: dict[str, object]) -> None:
    assert spacing_from_dataset(_ds(**values)) == PixelSpacingInfo(None, None, "none")


def test_real_cr_with_zero_pixel_spacing() -> None:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCR.dcm")
    if path is None:
        pytest.skip("RG1_UNCR.dcm (pydicom-data) is not installed")
    ds = dcmread(path, stop_before_pixels=True)
    assert [float(v) for v in ds.PixelSpacing] == [0.0, 0.0]
    assert spacing_from_dataset(ds).source == "none"


def test_spacing_info_validation() -> None:
    with pytest.raises(GeometryError, match="source"):
        PixelSpacingInfo(0.1, 0.1, "Spacing")
    with pytest.raises(GeometryError, match="row_mm"):
        PixelSpacingInfo(math.nan, 0.1, "PixelSpacing")
    with pytest.raises(GeometryError, match="none"):
        PixelSpacingInfo(0.1, 0.1, "none")
