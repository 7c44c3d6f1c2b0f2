"""The loc-token codec: exact format, round trips, and parsing of what models really emit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ensembles.loc_tokens import (
    LOC_TOKENS,
    SEG_TOKENS,
    LocTokenError,
    box_to_bins,
    decode_bin,
    encode_bin,
    format_detections,
    parse_detections,
)
from ensembles.types import Box, Detection


def test_token_tables() -> None:
    assert len(LOC_TOKENS) == 1024 and LOC_TOKENS[0] == "<loc0000>" and LOC_TOKENS[1023] == "<loc1023>"
    assert len(SEG_TOKENS) == 128 and SEG_TOKENS[0] == "<seg000>" and SEG_TOKENS[127] == "<seg127>"
    assert len(set(LOC_TOKENS)) == 1024


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0, 0), (1.0, 1023), (0.5, 512), (1 / 1024, 1), (1 / 1024 - 1e-12, 0), (0.999999, 1023)],
)
def test_encode_bin(value: float, expected: int) -> None:
    assert encode_bin(value) == expected


def test_encode_decode_formula_on_many_values() -> None:
    rng = np.random.default_rng(7)
    for v in rng.random(2000):
        b = encode_bin(float(v))
        assert b == min(1023, math.floor(v * 1024))
        assert decode_bin(b) == b / 1024


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), float("inf")])
def test_encode_rejects(bad: float) -> None:
    with pytest.raises(LocTokenError, match=r"\[0, 1\]"):
        encode_bin(bad)


@pytest.mark.parametrize("bad", [-1, 1024, 2.5])
def test_decode_rejects(bad: float) -> None:
    with pytest.raises(LocTokenError, match="0..1023"):
        decode_bin(bad)  # type: ignore[arg-type]


def test_format_matches_the_paper_layout() -> None:
    # y_min=482/1024, x_min=103/1024, y_max=599/1024, x_max=226/1024 (mid-bin values)
    box = Box(103.5 / 1024, 482.5 / 1024, 226.5 / 1024, 599.5 / 1024)
    text = format_detections([(box, "Fracture")])
    assert text == "<loc0482><loc0103><loc0599><loc0226> Fracture;"
    two = format_detections([(box, "Fracture"), Detection(Box(0.0, 0.0, 1.0, 1.0), "Fracture")])
    assert two == text + " <loc0000><loc0000><loc1023><loc1023> Fracture;"
    assert format_detections([]) == "Normal"


def test_format_rejects_bad_labels_and_boxes() -> None:
    with pytest.raises(LocTokenError, match="label"):
        format_detections([((0.1, 0.1, 0.2, 0.2), "")])
    with pytest.raises(LocTokenError, match="must not contain"):
        format_detections([((0.1, 0.1, 0.2, 0.2), "a;b")])
    with pytest.raises(LocTokenError, match="x0 < x1"):
        format_detections([((0.3, 0.1, 0.2, 0.2), "Fracture")])


def test_round_trip_error_below_one_bin_on_random_boxes() -> None:
    rng = np.random.default_rng(1234)
    for _ in range(300):
        n = int(rng.integers(1, 5))
        boxes = []
        for _ in range(n):
            x = np.sort(rng.random(2))
            y = np.sort(rng.random(2))
            if x[1] - x[0] < 2 / 1024 or y[1] - y[0] < 2 / 1024:
                continue
            boxes.append(Box(float(x[0]), float(y[0]), float(x[1]), float(y[1])))
        text = format_detections([(b, "Fracture") for b in boxes])
        parsed = parse_detections(text)
        assert parsed.dropped == 0 and len(parsed) == len(boxes)
        for original, got in zip(boxes, parsed):
            assert got.label == "fracture"
            errors = np.abs(np.array(original) - np.array(got.box))
            assert errors.max() < 1 / 1024
            assert all(g <= o for g, o in zip(got.box, original))  # floor: never above


def test_round_trip_of_coordinate_one_is_within_one_bin() -> None:
    parsed = parse_detections(format_detections([((0.5, 0.5, 1.0, 1.0), "Fracture")]))
    assert parsed[0].box == Box(0.5, 0.5, 1023 / 1024, 1023 / 1024)


def test_sub_bin_boxes_are_widened_so_they_parse() -> None:
    assert box_to_bins((0.5, 0.5, 0.5 + 1e-4, 0.5 + 1e-4)) == (512, 512, 513, 513)
    assert box_to_bins((0.9999, 0.9999, 1.0, 1.0)) == (1022, 1022, 1023, 1023)
    parsed = parse_detections(format_detections([((0.5, 0.5, 0.5001, 0.6), "Fracture")]))
    assert parsed.dropped == 0 and len(parsed) == 1


def test_parse_paligemma_own_format_any_case() -> None:
    text = "<loc0100><loc0200><loc0300><loc0400> FRACTURE ; <loc0010><loc0020><loc0030><loc0040> Fracture"
    parsed = parse_detections(text)
    assert [d.label for d in parsed] == ["fracture", "fracture"]
    assert parsed[0].box == Box(200 / 1024, 100 / 1024, 400 / 1024, 300 / 1024)
    assert parsed[0].bins == (100, 200, 300, 400)
    assert parsed[1].box == Box(20 / 1024, 10 / 1024, 40 / 1024, 30 / 1024)
    assert parsed.dropped == 0 and not parsed.is_normal


def test_parse_tolerates_whitespace_and_missing_semicolons() -> None:
    text = "  <loc0100> <loc0200>\n<loc0300><loc0400>Fracture <loc0500><loc0500><loc0600><loc0600> Fracture;;  "
    parsed = parse_detections(text)
    assert len(parsed) == 2 and parsed.dropped == 0
    assert [d.group_index for d in parsed] == [0, 1]


@pytest.mark.parametrize("text", ["Normal", "normal", " NORMAL ;", "Normal<eos>", "<pad>normal"])
def test_parse_normal(text: str) -> None:
    parsed = parse_detections(text)
    assert parsed.is_normal and len(parsed) == 0 and parsed.dropped == 0


@pytest.mark.parametrize(
    ("text", "kept", "dropped", "reason"),
    [
        ("<loc0100><loc0200><loc0300> fracture;", 0, 1, "3 loc tokens"),
        ("<loc0100><loc0200><loc0300><loc0400><loc0500> fracture;", 0, 1, "5 loc tokens"),
        ("<loc0300><loc0200><loc0300><loc0400> fracture;", 0, 1, "empty box"),  # y_max == y_min
        ("<loc0100><loc0400><loc0300><loc0200> fracture;", 0, 1, "empty box"),  # x_max < x_min
        ("<loc0100><loc0200><loc0300><loc1024> fracture;", 0, 1, "above 1023"),
        ("garbage", 0, 1, "text without loc tokens"),
        ("", 0, 0, ""),
        (
            "<loc0100><loc0200> fracture ; <loc0100><loc0200><loc0300><loc0400> fracture ; <loc0001>",
            1, 2, "2 loc tokens",
        ),
    ],
)
def test_parse_drops_what_is_not_a_box(text: str, kept: int, dropped: int, reason: str) -> None:
    parsed = parse_detections(text)
    assert len(parsed) == kept and parsed.dropped == dropped
    assert reason in " ".join(parsed.drop_reasons)
    assert not parsed.is_normal


def test_parse_ignores_other_special_tokens_and_defaults_missing_label() -> None:
    parsed = parse_detections("<bos><loc0100><seg012><loc0200><loc0300><loc0400><eos>")
    assert len(parsed) == 1 and parsed[0].label == "fracture" and parsed.dropped == 0
    assert parse_detections("<loc0100><loc0200><loc0300><loc0400>", default_label="x")[0].label == "x"


def test_group_index_counts_dropped_groups() -> None:
    parsed = parse_detections(
        "<loc0001><loc0002> a ; <loc0100><loc0200><loc0300><loc0400> b ; <loc0100><loc0200><loc0300><loc0400> c"
    )
    assert [(d.group_index, d.label) for d in parsed] == [(1, "b"), (2, "c")]


def test_as_detections_and_sequence_protocol() -> None:
    parsed = parse_detections("<loc0100><loc0200><loc0300><loc0400> Fracture;")
    dets = parsed.as_detections(score=0.7)
    assert dets == [Detection(Box(200 / 1024, 100 / 1024, 400 / 1024, 300 / 1024), "fracture", 0.7)]
    assert list(parsed) == parsed[:] and len(parsed) == 1


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(LocTokenError, match="needs a string"):
        parse_detections(None)  # type: ignore[arg-type]
