"""The PaliGemma classifier and detector members on tiny random-init checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ensembles.checkpoint import read_member_spec  # noqa: E402
from ensembles.errors import CheckpointError  # noqa: E402
from ensembles.loc_tokens import parse_detections  # noqa: E402
from ensembles.members.paligemma_classifier import PaliGemmaClassifier  # noqa: E402
from ensembles.members.paligemma_detector import PaliGemmaDetector  # noqa: E402
from ensembles.registry import Member, create_member, list_members  # noqa: E402
from ensembles.types import Box, Detection  # noqa: E402
from ensembles.demo_arch.paligemma import build_tiny_paligemma, default_spec, write_tiny_paligemma_checkpoint  # noqa: E402

SMALL = dict(image_size=48, patch=16, siglip_hidden=32, siglip_layers=2, text_hidden=64,
             text_layers=2)


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(60, 40), (48, 48), (30, 90), (100, 70), (52, 52), (40, 64)]
    return [rng.random(shapes[i % len(shapes)], dtype=np.float32) for i in range(n)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pg_members")
    write_tiny_paligemma_checkpoint(root / "cls", "paligemma-classifier", seed=1, **SMALL)
    write_tiny_paligemma_checkpoint(root / "cls2", "paligemma-classifier", seed=2,
                                    text_model="gemma2", task_head=8, **SMALL)
    write_tiny_paligemma_checkpoint(root / "det", "paligemma-detector", seed=3, threshold=0.0,
                                    options={"max_boxes": 3}, **SMALL)
    return {"cls": root / "cls", "cls2": root / "cls2", "det": root / "det"}


def test_registered_kinds() -> None:
    kinds = list_members()
    assert "paligemma-classifier" in kinds and "paligemma-detector" in kinds


@pytest.mark.parametrize("which", ["cls", "cls2"])
def test_classifier_scores_in_range_and_deterministic(checkpoints, which: str) -> None:  # type: ignore[no-untyped-def]
    member = create_member("paligemma-classifier", checkpoints[which], batch_size=4)
    assert isinstance(member, Member)
    images = _images(5)
    first = member.predict(images)
    # Same batches: bit for bit. Other batches (the default size): oneDNN may pick other
    # kernels for another batch shape (seen on AVX-512 BF16 CPUs, 8th digit), so a tolerance.
    again = create_member("paligemma-classifier", checkpoints[which], batch_size=4).predict(images)
    default_batches = create_member("paligemma-classifier", checkpoints[which]).predict(images)
    assert len(first) == 5
    for out, other, regrouped in zip(first, again, default_batches):
        assert 0.0 <= out.score <= 1.0
        assert out.score == other.score
        assert out.score == pytest.approx(regrouped.score, abs=1e-6)
        p_pos, p_neg = out.extras["p_positive"], out.extras["p_negative"]
        assert out.score == pytest.approx(p_pos / (p_pos + p_neg), rel=1e-5)
        assert out.raw == ("Fracture" if p_pos > p_neg else "Normal")
        assert out.member == "tiny-pg-cls" and out.detections == []
    assert len({round(o.score, 6) for o in first}) > 1  # the image matters


def test_batch_of_one_equals_batch_of_n(checkpoints) -> None:  # type: ignore[no-untyped-def]
    images = _images(6)
    single = create_member("paligemma-classifier", checkpoints["cls2"], batch_size=1)
    batched = create_member("paligemma-classifier", checkpoints["cls2"], batch_size=6)
    np.testing.assert_allclose([o.score for o in single.predict(images)],
                               [o.score for o in batched.predict(images)], atol=1e-5)


def test_left_padding_with_different_prompts(checkpoints) -> None:  # type: ignore[no-untyped-def]
    member = create_member("paligemma-classifier", checkpoints["cls"])
    prompts = ["Is there a fracture in this x-ray?", "Detect Fracture", "Is there any fracture?"]
    with torch.inference_mode():
        pixels = member.pixel_values(_images(3))
        together = member.first_step_logits(pixels, prompts)
        alone = torch.cat(
            [member.first_step_logits(pixels[i : i + 1], [p]) for i, p in enumerate(prompts)]
        )
        inputs = member.encode(3, prompts)
    assert (inputs["attention_mask"][:, 0] == 0).any(), "prompts should need padding"
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model, processor = build_tiny_paligemma(seed=7, task_head=6, **SMALL)
    spec = default_spec("paligemma-classifier", image_size=48)
    in_memory = PaliGemmaClassifier(model, processor, spec)
    write_tiny_paligemma_checkpoint(tmp_path, "paligemma-classifier", seed=7, task_head=6,
                                    **SMALL)
    loaded = create_member("paligemma-classifier", tmp_path)
    images = _images(4)
    assert [o.score for o in in_memory.predict(images)] == [o.score for o in loaded.predict(images)]


def test_detector_threshold_zero_always_decodes_boxes(checkpoints) -> None:  # type: ignore[no-untyped-def]
    member = create_member("paligemma-detector", checkpoints["det"], batch_size=3)
    assert isinstance(member, PaliGemmaDetector)
    outputs = member.predict(_images(4))
    for out in outputs:
        assert 0.0 <= out.score <= 1.0
        assert out.extras["decoded"] is True
        assert 1 <= len(out.detections) <= 3
        assert parse_detections(out.raw or "").dropped == 0
        confidences = [d.score for d in out.detections]
        assert confidences[0] == pytest.approx(out.score)
        assert all(0.0 <= c <= out.score + 1e-9 for c in confidences)
        assert confidences == sorted(confidences, reverse=True)
        for det, info in zip(out.detections, out.extras["boxes"]):
            assert det.label == "fracture"
            assert len(info["loc_probs"]) == 4
            assert 0.0 < info["loc_prob_geomean"] <= 1.0
    again = create_member("paligemma-detector", checkpoints["det"], batch_size=1)
    for a, b in zip(outputs, again.predict(_images(4))):
        assert a.raw == b.raw
        assert a.score == pytest.approx(b.score, abs=1e-5)


def test_detector_score_is_loc_mass_against_normal(checkpoints) -> None:  # type: ignore[no-untyped-def]
    member = create_member("paligemma-detector", checkpoints["det"])
    with torch.inference_mode():
        logits = member.first_step_logits(member.pixel_values(_images(2)))
    probs = torch.softmax(logits, dim=-1)
    p_loc = probs[:, list(member.grammar.loc_ids)].sum(-1)
    p_normal = probs[:, member.normal_id]
    scores, _ = member.scores_from_logits(logits)
    torch.testing.assert_close(scores, p_loc / (p_loc + p_normal), atol=1e-5, rtol=1e-5)


def test_detector_threshold_one_never_decodes(checkpoints) -> None:  # type: ignore[no-untyped-def]
    member = create_member("paligemma-detector", checkpoints["det"], threshold=1.0)
    for out in member.predict(_images(3)):
        assert out.score < 1.0
        assert out.detections == [] and out.extras["decoded"] is False
        assert out.raw == "Normal"


def test_box_confidence_scales_with_image_score(checkpoints) -> None:  # type: ignore[no-untyped-def]
    member = create_member("paligemma-detector", checkpoints["det"])
    with torch.inference_mode():
        pixels = member.pixel_values(_images(1))
        (high,) = member.decode(pixels, [0.9])
        (low,) = member.decode(pixels, [0.3])
    assert high[0] == low[0]  # same text: the score only scales the confidences
    for a, b in zip(high[1], low[1]):
        assert a.score == pytest.approx(b.score * 3.0, rel=1e-6)


def test_members_refuse_bad_specs(checkpoints) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CheckpointError, match="kind is 'paligemma-detector'"):
        create_member("paligemma-classifier", checkpoints["det"])
    with pytest.raises(CheckpointError, match="unknown option"):
        create_member("paligemma-classifier", checkpoints["cls"], colour="red")
    model, processor = build_tiny_paligemma(**SMALL)
    spec = default_spec("paligemma-classifier", image_size=48)
    with pytest.raises(CheckpointError, match="start with the same token"):
        PaliGemmaClassifier(model, processor, spec.replace(labels=("Normal", "Normal")))
    with pytest.raises(CheckpointError, match="labels"):
        PaliGemmaClassifier(model, processor, spec.replace(labels=("Fracture",)))
    with pytest.raises(CheckpointError, match="image_size"):
        PaliGemmaClassifier(model, processor, spec.replace(image_size=64))
    det_spec = read_member_spec(checkpoints["det"])
    with pytest.raises(CheckpointError, match="cannot fit one box"):
        PaliGemmaDetector(model, processor, det_spec, max_new_tokens=3)
    with pytest.raises(ValueError, match="batch_size"):
        PaliGemmaDetector(model, processor, det_spec, batch_size=0)


def _bright_box(pixels: torch.Tensor) -> Box:
    """The normalised box of an input square's bright pixels (an oracle's answer)."""
    bright = pixels[0] > 0.5
    rows = torch.nonzero(bright.any(dim=1)).flatten()
    cols = torch.nonzero(bright.any(dim=0)).flatten()
    side = pixels.shape[-1]
    return Box(int(cols[0]) / side, int(rows[0]) / side, (int(cols[-1]) + 1) / side, (int(rows[-1]) + 1) / side)


def _oracle(bias: float, calls: list[int]):  # type: ignore[no-untyped-def]
    """A decode that finds the bright rectangle and writes it ``bias`` to the right of where it is
    in the square it is shown (a model's own-frame error, which the other symmetries undo)."""
    def decode(pixel_values: torch.Tensor, scores: list[float]):  # type: ignore[no-untyped-def]
        calls.append(len(scores))
        out = []
        for pixels, score in zip(pixel_values, scores):
            box = _bright_box(pixels)
            out.append(("answer", [Detection(Box(box.x0 + bias, box.y0, box.x1 + bias, box.y1), score=score)],
                        {"boxes": []}))
        return out
    return decode


def test_detector_symmetries_place_boxes_by_the_median_of_the_decodes(checkpoints) -> None:  # type: ignore[no-untyped-def]
    image = np.zeros((96, 96), dtype=np.float32)
    image[20:44, 50:70] = 1.0  # off-centre and not square: every symmetry moves it
    plain = create_member("paligemma-detector", checkpoints["det"])
    square = plain.pixel_values([image])[0]
    truth = _bright_box(square)

    for count in (2, 4, 8):  # the member path maps every symmetry's boxes back exactly
        member = create_member("paligemma-detector", checkpoints["det"], symmetries=count)
        calls: list[int] = []
        member.decode = _oracle(0.0, calls)  # type: ignore[method-assign]
        out = member.predict([image])[0]
        assert len(calls) == count
        assert tuple(out.detections[0].box) == pytest.approx(tuple(truth))
        assert out.extras["symmetries"] == count and out.extras["symmetry_votes"] == [count]

    calls = []
    plain.decode = _oracle(0.1, calls)  # type: ignore[method-assign]
    alone = plain.predict([image])[0]
    assert len(calls) == 1 and "symmetries" not in alone.extras
    assert alone.detections[0].box.x0 == pytest.approx(truth.x0 + 0.1)
    member = create_member("paligemma-detector", checkpoints["det"], symmetries=8)
    member.decode = _oracle(0.1, calls)  # type: ignore[method-assign]
    placed = member.predict([image])[0]
    assert placed.detections[0].box.iou(truth) > alone.detections[0].box.iou(truth)
    # the plain decode's confidence and answer stay
    assert placed.detections[0].score == alone.detections[0].score and placed.raw == "answer"


def test_detector_refuses_a_symmetry_count_it_cannot_take(checkpoints) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CheckpointError, match="symmetries must be one of 1, 2, 4, 8"):
        create_member("paligemma-detector", checkpoints["det"], symmetries=3)


@pytest.mark.parametrize("which, kind", [("cls", "paligemma-classifier"), ("cls2", "paligemma-classifier"),
                                         ("det", "paligemma-detector")])
def test_scores_alone_are_the_scores_predict_gives(checkpoints, which: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    """``scores`` (one forward pass, what score_symmetries asks for) says what ``predict`` says."""
    member = create_member(kind, checkpoints[which], batch_size=3)
    images = _images(5, seed=4)
    alone = member.scores(images)
    assert len(alone) == 5 and len({round(s, 6) for s in alone}) > 1
    np.testing.assert_allclose(alone, [o.score for o in member.predict(images)], atol=1e-6)
