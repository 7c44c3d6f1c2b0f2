"""The task-attention head: token count, init, and checkpoints with and without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ensembles.checkpoint import read_member_spec, write_member_spec  # noqa: E402
from ensembles.errors import CheckpointError  # noqa: E402
from ensembles.members.paligemma_common import load_paligemma  # noqa: E402
from ensembles.members.paligemma_inputs import encode_prompts  # noqa: E402
from ensembles.task_head import (  # noqa: E402
    TaskAttentionProjector,
    TaskHeadSettings,
    image_token_count,
)
from ensembles.demo_arch.paligemma import build_tiny_paligemma, write_tiny_paligemma_checkpoint  # noqa: E402

SMALL = dict(patch=16, siglip_hidden=32, siglip_layers=1, text_hidden=32, text_layers=1)


def _logits(model, processor, pixels: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    enc = encode_prompts(processor.tokenizer, ["Detect Fracture"] * pixels.shape[0],
                         processor.image_seq_length)
    with torch.inference_mode():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                     token_type_ids=enc["token_type_ids"], pixel_values=pixels).logits


@pytest.mark.parametrize("image_size", [32, 64, 96])
def test_head_gives_num_queries_tokens_whatever_the_image_size(image_size: int) -> None:
    model, processor = build_tiny_paligemma(image_size=image_size, task_head=12, **SMALL)
    assert isinstance(model.model.multi_modal_projector, TaskAttentionProjector)
    assert processor.image_seq_length == 12 == image_token_count(model.config)
    pixels = torch.randn(2, 3, image_size, image_size)
    with torch.inference_mode():
        features = model.get_image_features(pixels).pooler_output
    assert features.shape == (2, 12, model.config.text_config.hidden_size)
    assert _logits(model, processor, pixels).shape[1] == 12 + len(
        processor.tokenizer.encode("<bos>Detect Fracture\n", add_special_tokens=False)
    )


def test_without_head_one_token_per_patch() -> None:
    model, processor = build_tiny_paligemma(image_size=64, task_head=False, **SMALL)
    assert model.task_head is None
    assert processor.image_seq_length == 16
    with torch.inference_mode():
        features = model.get_image_features(torch.randn(1, 3, 64, 64)).pooler_output
    assert features.shape[1] == 16


def test_paper_default_is_256_queries() -> None:
    assert TaskHeadSettings.parse(True) == TaskHeadSettings(256)
    assert TaskHeadSettings.parse(None) is None
    assert TaskHeadSettings.parse({"num_queries": 8}).num_queries == 8  # type: ignore[union-attr]
    with pytest.raises(CheckpointError, match="num_queries"):
        TaskHeadSettings.parse({"num_queries": 0})
    with pytest.raises(CheckpointError, match="unknown key"):
        TaskHeadSettings.parse({"queries": 8})


def test_fresh_head_is_finite_and_sane() -> None:
    model, _ = build_tiny_paligemma(image_size=32, task_head=64, **SMALL)
    head = model.task_head
    assert head is not None
    for name, param in head.head_parameters():
        assert torch.isfinite(param).all(), name
    assert 0.8 < float(head.queries.detach().std()) < 1.2  # N(0, 1) queries
    bound = (6.0 / (2 * 32)) ** 0.5  # Xavier uniform on 32x32
    assert float(head.key_proj.weight.detach().abs().max()) <= bound + 1e-6
    assert float(head.key_proj.weight.detach().std()) > 0.5 * bound / 3**0.5
    # the queries start out attending differently, not all to the same average
    with torch.inference_mode():
        attended = head.attend(torch.randn(1, 4, 32))
    assert float(attended[0].std(dim=0).mean()) > 1e-3


def test_checkpoint_with_head_round_trips(tmp_path: Path) -> None:
    write_tiny_paligemma_checkpoint(tmp_path, "paligemma-detector", image_size=32,
                                    task_head=8, seed=5, **SMALL)
    model, processor = build_tiny_paligemma(image_size=32, task_head=8, seed=5, **SMALL)
    loaded = load_paligemma(tmp_path)
    assert loaded.processor.image_seq_length == 8
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(
        _logits(loaded.model, loaded.processor, pixels), _logits(model, processor, pixels),
        rtol=0, atol=0,
    )


def test_stock_checkpoint_gets_a_fresh_seeded_head(tmp_path: Path) -> None:
    write_tiny_paligemma_checkpoint(tmp_path, "paligemma-classifier", image_size=32, **SMALL)
    stock = load_paligemma(tmp_path)
    assert stock.model.task_head is None
    spec = read_member_spec(tmp_path)
    write_member_spec(tmp_path, spec.replace(options={"task_head": {"num_queries": 6}}))
    first = load_paligemma(tmp_path)
    second = load_paligemma(tmp_path)
    head = first.model.task_head
    assert head is not None and head.num_queries == 6
    assert first.processor.image_seq_length == 6
    # the projector's stock linear is the checkpoint's, the new head is finite and reproducible
    torch.testing.assert_close(
        head.linear.weight, stock.model.model.multi_modal_projector.linear.weight
    )
    for name, param in head.head_parameters():
        assert torch.isfinite(param).all() and float(param.detach().abs().max()) < 100, name
    pixels = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(
        _logits(first.model, first.processor, pixels),
        _logits(second.model, second.processor, pixels), rtol=0, atol=0,
    )


def test_conflicting_or_partial_head_is_refused(tmp_path: Path) -> None:
    write_tiny_paligemma_checkpoint(tmp_path, "paligemma-classifier", image_size=32,
                                    task_head=4, **SMALL)
    spec = read_member_spec(tmp_path)
    write_member_spec(tmp_path, spec.replace(options={"task_head": 5}))
    with pytest.raises(CheckpointError, match="disagrees"):
        load_paligemma(tmp_path)
    write_member_spec(tmp_path, spec)
    weights = load_file(str(tmp_path / "model.safetensors"))
    del weights["model.multi_modal_projector.queries"]
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="only part of the task head"):
        load_paligemma(tmp_path)
