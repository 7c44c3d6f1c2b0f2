"""The ``detr`` member: output decoding, checkpoint round trip, batching and determinism."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("transformers")

from ensembles.checkpoint import MEMBER_JSON, read_member_spec  # noqa: E402
from ensembles.errors import CheckpointError, EnsembleError, MemberUnavailableError  # noqa: E402
from ensembles.members.detr import DetrMember, decode_detr_outputs  # noqa: E402
from ensembles.preprocess import PreprocessConfig, preprocess_batch  # noqa: E402
from ensembles.registry import create_member, list_members  # noqa: E402
from ensembles.demo_arch.detr import build_tiny_detr  # noqa: E402
from ensembles.detr_arch import save_detr_checkpoint  # noqa: E402
from ensembles.types import Box  # noqa: E402

IMAGE_SIZE = 96


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = build_tiny_detr(seed=3, num_queries=12)
    return save_detr_checkpoint(
        tmp_path_factory.mktemp("detr") / "ckpt", model, name="tiny-detr", image_size=IMAGE_SIZE
    )


@pytest.fixture(scope="module")
def member(checkpoint: Path) -> DetrMember:
    return create_member("detr", checkpoint, batch_size=4)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    shapes = [(120, 90), (64, 64), (80, 150), (200, 100), (96, 96)]
    return [rng.random(shape, dtype=np.float32) for shape in shapes]


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def test_decode_scores_boxes_floor_and_order() -> None:
    # Two classes + "no object"; probabilities chosen through logits relative to 0.
    logits = np.array(
        [
            [np.log(6.0), 0.0, 0.0],  # fracture 6/8 = 0.75
            [0.0, np.log(2.0), 0.0],  # other 2/4 = 0.5 -> label "other"
            [-5.0, -5.0, 5.0],  # mostly no object -> under the floor
            [np.log(8.0), 0.0, 0.0],  # 0.8, but box empty after clipping -> dropped
        ]
    )
    boxes = np.array(
        [
            [0.5, 0.5, 0.2, 0.4],
            [0.1, 0.9, 0.4, 0.4],  # clipped at the left and bottom border
            [0.5, 0.5, 0.1, 0.1],
            [1.2, 0.5, 0.2, 0.2],  # entirely right of the image
        ]
    )
    detections, dropped = decode_detr_outputs(
        logits, boxes, ("fracture", "other"), box_floor=0.05, top_k=10
    )
    assert dropped == 1
    assert [d.label for d in detections] == ["fracture", "other"]
    assert detections[0].score == pytest.approx(0.75)
    assert detections[1].score == pytest.approx(0.5)
    assert detections[0].box == pytest.approx((0.4, 0.3, 0.6, 0.7))
    assert detections[1].box == pytest.approx((0.0, 0.7, 0.3, 1.0))


def test_decode_top_k_and_non_finite() -> None:
    logits = np.array([[_logit(p), 0.0] for p in (0.2, 0.9, 0.6, 0.7)])
    boxes = np.tile([0.5, 0.5, 0.2, 0.2], (4, 1))
    boxes[2, 0] = np.nan
    detections, dropped = decode_detr_outputs(logits, boxes, ("fracture",), top_k=2)
    assert dropped == 1
    assert [round(d.score, 6) for d in detections] == [0.9, 0.7]


def test_decode_matches_transformers_post_processing() -> None:
    from transformers import DetrImageProcessor

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(30, 2)) * 2
    boxes = np.column_stack([rng.uniform(0.3, 0.7, (30, 2)), rng.uniform(0.05, 0.3, (30, 2))])
    outputs = SimpleNamespace(
        logits=torch.from_numpy(logits[None]).float(),
        pred_boxes=torch.from_numpy(boxes[None]).float(),
    )
    floor = 0.3
    expected = DetrImageProcessor().post_process_object_detection(
        outputs, threshold=floor, target_sizes=[(1, 1)]
    )[0]
    detections, dropped = decode_detr_outputs(
        logits, boxes, ("fracture",), box_floor=floor, top_k=30
    )
    assert dropped == 0
    order = np.argsort(-expected["scores"].numpy(), kind="stable")
    assert len(detections) == len(order) > 0
    np.testing.assert_allclose(
        [d.score for d in detections], expected["scores"].numpy()[order], atol=1e-6
    )
    np.testing.assert_allclose(
        [tuple(d.box) for d in detections], expected["boxes"].numpy()[order], atol=1e-6
    )


def test_decode_clips_to_content_region() -> None:
    logits = np.array([[_logit(0.9), 0.0], [_logit(0.8), 0.0]])
    boxes = np.array([[0.5, 0.5, 0.4, 0.8], [0.5, 0.05, 0.2, 0.05]])  # 2nd: in the top padding
    detections, dropped = decode_detr_outputs(
        logits, boxes, ("fracture",), region=(0.0, 0.25, 1.0, 0.75)
    )
    assert dropped == 1
    assert len(detections) == 1
    assert detections[0].box == pytest.approx((0.3, 0.25, 0.7, 0.75))


def test_decode_rejects_wrong_shapes() -> None:
    with pytest.raises(EnsembleError, match=r"\(queries, 2\)"):
        decode_detr_outputs(np.zeros((4, 3)), np.zeros((4, 4)), ("fracture",))


def test_registered() -> None:
    assert "detr" in list_members()


def test_checkpoint_files(checkpoint: Path) -> None:
    names = {p.name for p in checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", MEMBER_JSON} <= names
    spec = read_member_spec(checkpoint)
    assert (spec.kind, spec.resize, spec.image_size, spec.labels) == (
        "detr",
        "letterbox",
        IMAGE_SIZE,
        ("fracture",),
    )


def test_outputs_valid_and_image_score_is_best_box(
    member: DetrMember, images: list[np.ndarray]
) -> None:
    outputs = member.predict(images)
    assert len(outputs) == len(images)
    for out in outputs:
        assert out.member == "tiny-detr"
        assert 0.0 <= out.score <= 1.0
        assert out.detections, "a random DETR scores about 0.5 per query, above the 0.05 floor"
        assert out.score == max(d.score for d in out.detections)
        scores = [d.score for d in out.detections]
        assert scores == sorted(scores, reverse=True)
        assert len(out.detections) <= 12
        for det in out.detections:
            assert Box.checked(*det.box) == det.box
            assert 0.0 <= det.score <= 1.0


def test_deterministic_and_batch_invariant(checkpoint: Path, images: list[np.ndarray]) -> None:
    batched = create_member("detr", checkpoint, batch_size=5)
    single = create_member("detr", checkpoint, batch_size=1)
    first = batched.predict(images)
    again = batched.predict(images)
    one_by_one = single.predict(images)
    for a, b, c in zip(first, again, one_by_one):
        assert a.score == b.score
        assert [d.box for d in a.detections] == [d.box for d in b.detections]
        assert a.score == pytest.approx(c.score, abs=1e-5)
        assert len(a.detections) == len(c.detections)
        np.testing.assert_allclose(
            [tuple(d.box) for d in a.detections], [tuple(d.box) for d in c.detections], atol=1e-5
        )


def test_checkpoint_round_trip_identical(tmp_path: Path, images: list[np.ndarray]) -> None:
    model = build_tiny_detr(seed=11, num_queries=8)
    directory = save_detr_checkpoint(tmp_path / "rt", model, image_size=64)
    in_memory = DetrMember(model, read_member_spec(directory))
    loaded = create_member("detr", directory)
    for a, b in zip(in_memory.predict(images), loaded.predict(images)):
        assert a.score == b.score
        assert [(d.box, d.score, d.label) for d in a.detections] == [
            (d.box, d.score, d.label) for d in b.detections
        ]


def test_model_sees_checkpoint_preprocessing(member: DetrMember, images: list[np.ndarray]) -> None:
    seen: list[torch.Tensor] = []
    handle = member.model.register_forward_pre_hook(
        lambda _module, _args, kwargs: seen.append(kwargs["pixel_values"].clone()),
        with_kwargs=True,
    )
    try:
        member.predict(images[:3])
    finally:
        handle.remove()
    expected = preprocess_batch(images[:3], PreprocessConfig.from_spec(member.spec))
    assert expected.shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    np.testing.assert_array_equal(seen[0].numpy(), expected)


def test_boxes_stay_in_letterbox_content(member: DetrMember) -> None:
    wide = np.random.default_rng(3).random((40, 200), dtype=np.float32)
    # s = min(96/40, 96/200) = 0.48: content 19 x 96 px at pad_top (96 - 19) // 2 = 38
    region = member.content_region(40, 200)
    assert region == pytest.approx((0.0, 38 / 96, 1.0, 57 / 96))
    (out,) = member.predict([wide])
    assert out.detections
    for det in out.detections:
        assert region[1] <= det.box.y0 < det.box.y1 <= region[3]
        assert 0.0 <= det.box.x0 < det.box.x1 <= 1.0


def test_floor_one_gives_no_box_and_zero_score(checkpoint: Path, images: list[np.ndarray]) -> None:
    strict = create_member("detr", checkpoint, box_floor=1.0)
    for out in strict.predict(images[:2]):
        assert out.detections == []
        assert out.score == 0.0


def test_empty_input(member: DetrMember) -> None:
    assert member.predict([]) == []


def test_option_and_quantization_errors(checkpoint: Path) -> None:
    with pytest.raises(EnsembleError, match="detr got unknown option.*box_flor"):
        create_member("detr", checkpoint, box_flor=0.1)
    with pytest.raises(EnsembleError, match="does not support quantization='8bit'"):
        create_member("detr", checkpoint, quantization="8bit")
    with pytest.raises(EnsembleError, match="top_k must be a positive integer"):
        create_member("detr", checkpoint, top_k=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_refused_without_gpu(checkpoint: Path) -> None:
    with pytest.raises(MemberUnavailableError, match="CUDA is not available"):
        create_member("detr", checkpoint, device="cuda")


def test_checkpoint_errors(tmp_path: Path, checkpoint: Path) -> None:
    spec = json.loads((checkpoint / MEMBER_JSON).read_text())
    wrong_kind = tmp_path / "wrong"
    wrong_kind.mkdir()
    (wrong_kind / MEMBER_JSON).write_text(json.dumps({**spec, "kind": "refiner"}))
    with pytest.raises(CheckpointError, match="of kind 'refiner', not 'detr'"):
        create_member("detr", wrong_kind)
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    (no_weights / MEMBER_JSON).write_text(json.dumps(spec))
    with pytest.raises(CheckpointError, match="files: .*noweights. has no config.json"):
        create_member("detr", no_weights)
    two_labels = read_member_spec(checkpoint).__class__(
        **{**read_member_spec(checkpoint).__dict__, "labels": ("a", "b")}
    )
    with pytest.raises(CheckpointError, match="has 1 classes"):
        DetrMember(build_tiny_detr(num_queries=4), two_labels)
