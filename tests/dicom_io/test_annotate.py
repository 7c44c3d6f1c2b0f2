"""dicom_io.annotate: one look for a finding's level, one wording, boxes burned into pixels."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_io.annotate import (
    DOUBT_COLOUR,
    STRICT_COLOUR,
    LevelStyle,
    burn_in,
    finding_text,
    level_style,
    shrink,
)
from dicom_io.errors import InvalidArgumentError

LEVELS = ("doubt", "fracture")


def _grey(rows: int = 400, cols: int = 600, value: float = 0.5) -> np.ndarray:
    return np.full((rows, cols), value, dtype=np.float32)


def _is(rgb: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(rgb == np.array(colour, dtype=np.uint8), axis=-1)


def test_level_style_strictest_solid_red_orange_lower_dashed_yellow() -> None:
    assert level_style("fracture", LEVELS) == LevelStyle(STRICT_COLOUR, False, "fracture")
    assert level_style("doubt", LEVELS) == LevelStyle(DOUBT_COLOUR, True, "doubt")
    three = ("low", "mid", "high")
    assert level_style("mid", three).dashed and level_style("low", three).colour == DOUBT_COLOUR
    assert level_style("high", three) == LevelStyle((255, 64, 32), False, "high")


def test_level_style_single_point_is_solid_red_orange() -> None:
    for level in (None, ""):
        style = level_style(level, ())
        assert style.colour == (255, 64, 32) and not style.dashed


def test_level_style_unknown_level_names_the_levels() -> None:
    with pytest.raises(InvalidArgumentError, match=r"'sure' is not one of .*\['doubt', 'fracture'\]"):
        level_style("sure", LEVELS)


def test_finding_text_wording() -> None:
    assert finding_text(0.87, None) == "AI fracture 87 %"
    assert finding_text(0.874, "doubt") == "AI fracture 87 % (doubt)"
    assert finding_text(1.0, "") == "AI fracture 100 %"
    for bad in (1.2, -0.1, float("nan")):
        with pytest.raises(InvalidArgumentError, match="score must be in"):
            finding_text(bad, None)


def test_burn_in_draws_the_box_where_it_is_and_nowhere_else() -> None:
    grey = _grey()
    out = burn_in(grey, [((100.0, 200.0, 300.0, 350.0), "", level_style("fracture", LEVELS))])
    assert out.shape == (400, 600, 3) and out.dtype == np.uint8
    red = _is(out, STRICT_COLOUR)
    # the four edges carry the colour ...
    assert red[200, 150:250].all() and red[349, 150:250].all()
    assert red[250:330, 100].all() and red[250:330, 299].all()
    # ... the inside and the far background keep the source grey (0.5 -> 128)
    assert (out[260:300, 150:250] == 128).all() and (out[:150, 400:] == 128).all()


def test_burn_in_colour_per_level_and_dashed_versus_solid() -> None:
    grey = _grey()
    solid = burn_in(grey, [((100.0, 100.0, 500.0, 300.0), "", level_style("fracture", LEVELS))])
    dashed = burn_in(grey, [((100.0, 100.0, 500.0, 300.0), "", level_style("doubt", LEVELS))])
    top_solid = _is(solid, STRICT_COLOUR)[100, 110:490]
    top_dashed = _is(dashed, DOUBT_COLOUR)[100, 110:490]
    assert top_solid.all()
    assert not _is(dashed, STRICT_COLOUR).any() and not _is(solid, DOUBT_COLOUR).any()
    assert 0.3 < top_dashed.mean() < 0.7  # dashes and gaps
    gaps = dashed[100, 110:490][~top_dashed]
    assert (gaps == 128).all()  # the gaps show the image


def test_burn_in_downscale_keeps_the_box_in_place() -> None:
    grey = _grey(2000, 1000)
    box = (400.0, 1000.0, 800.0, 1600.0)  # col0, row0, col1, row1
    out = burn_in(grey, [(box, "", level_style(None, ()))], max_side=500)
    assert out.shape == (500, 250, 3)
    red = _is(out, STRICT_COLOUR)
    rows, cols = np.nonzero(red)
    # scale 0.25: the box spans cols 100..200 and rows 250..400 (edges), lines drawn inside +-thickness
    assert abs(cols.min() - 100) <= 2 and abs(cols.max() - 199) <= 2
    assert abs(rows.min() - 250) <= 2 and abs(rows.max() - 399) <= 2


def test_a_shrunk_preview_draws_exactly_as_the_full_image() -> None:
    """The night keeps ``shrink(pixels)`` and draws later with ``frame``: the same picture as
    drawing on the full image, at a fraction of the memory; a preview of another size is refused."""
    rng = np.random.default_rng(3)
    grey = rng.random((1300, 700))
    labels = [((100.0, 200.0, 400.0, 650.0), "AI fracture 87 %", level_style(None, ())),
              (None, "AI fracture 40 %", level_style("doubt", ("doubt", "fracture")))]
    preview = shrink(grey, 512)
    assert preview.dtype == np.uint8 and preview.shape == (512, 276)
    full = burn_in(grey, labels, max_side=512)
    assert np.array_equal(burn_in(preview, labels, max_side=512, frame=grey.shape), full)
    assert not np.array_equal(burn_in(preview, labels, max_side=512), full)  # boxes not rescaled
    with pytest.raises(InvalidArgumentError, match="is not the shrink of"):
        burn_in(preview, labels, max_side=400, frame=grey.shape)


def test_burn_in_never_upscales_and_takes_uint8() -> None:
    grey = np.full((100, 80), 7, dtype=np.uint8)
    out = burn_in(grey, [], max_side=512)
    assert out.shape == (100, 80, 3) and (out == 7).all()


def test_burn_in_text_has_a_dark_backing() -> None:
    grey = _grey(value=1.0)  # white image: text must still be readable
    style = level_style("doubt", LEVELS)
    out = burn_in(grey, [((200.0, 200.0, 400.0, 300.0), finding_text(0.87, "doubt"), style)])
    above = out[150:200, 200:400]
    assert (above == 0).all(axis=-1).sum() > 200  # the dark backing
    assert _is(above, DOUBT_COLOUR).sum() > 20  # the text in the level's colour


def test_burn_in_banner_strip_on_top() -> None:
    grey = _grey(300, 900)
    plain = burn_in(grey, [])
    bannered = burn_in(grey, [], banner="AI screening result, not for primary diagnosis")
    strip = bannered.shape[0] - plain.shape[0]
    assert 10 <= strip <= 60 and bannered.shape[1] == 900
    assert (bannered[strip:] == plain).all()  # the image itself is untouched below the strip
    top = bannered[:strip]
    assert (top == 255).all(axis=-1).sum() > 100 and (top == 0).all(axis=-1).sum() > 1000


def test_burn_in_image_level_finding_frames_the_image() -> None:
    out = burn_in(_grey(100, 100), [(None, "", level_style(None, ()))])
    red = _is(out, STRICT_COLOUR)
    assert red[0, 40:60].all() and red[99, 40:60].all() and red[40:60, 0].all()


@pytest.mark.parametrize("box", [(10.0, 10.0, 5.0, 20.0), (0.0, 0.0, float("nan"), 3.0), (1.0, 2.0, 3.0)])
def test_burn_in_refuses_bad_boxes(box: tuple[float, ...]) -> None:
    with pytest.raises(InvalidArgumentError, match="burn_in: a box must be"):
        burn_in(_grey(), [(box, "", level_style(None, ()))])  # type: ignore[list-item]


def test_burn_in_refuses_bad_images() -> None:
    with pytest.raises(InvalidArgumentError, match="2-D"):
        burn_in(np.zeros((3, 4, 3), dtype=np.float32), [])
    with pytest.raises(InvalidArgumentError, match="float in \\[0, 1\\] or uint8"):
        burn_in(np.zeros((3, 4), dtype=np.int16), [])
