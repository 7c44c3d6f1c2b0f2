"""The offline tiny PaliGemma factory: tokenizer, processor layout, model, checkpoint files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ensembles.checkpoint import read_member_spec  # noqa: E402
from ensembles.errors import CheckpointError  # noqa: E402
from ensembles.loc_tokens import LOC_TOKENS, SEG_TOKENS, format_detections  # noqa: E402
from ensembles.members.paligemma_inputs import encode_prompts  # noqa: E402
from ensembles.demo_arch.paligemma import (  # noqa: E402
    build_tiny_paligemma,
    build_tiny_processor,
    build_tiny_tokenizer,
    write_tiny_paligemma_checkpoint,
)


@pytest.fixture(scope="module")
def processor():  # type: ignore[no-untyped-def]
    return build_tiny_processor(image_size=112, image_seq_length=49)


def test_tokenizer_has_gemma_special_ids_and_round_trips_any_text() -> None:
    tok = build_tiny_tokenizer()
    assert [tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    for text in ("Detect Fracture", "Is there a fracture in this x-ray?", "zebra ünï 42;"):
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
        assert tok.unk_token_id not in ids  # byte fallback covers unknown characters
    # prompt words are single pieces, with Gemma's leading "▁" after a space
    assert tok.convert_ids_to_tokens(tok.encode(" Fracture;", add_special_tokens=False)) == [
        "▁Fracture",
        ";",
    ]


def test_processor_adds_loc_seg_and_image_tokens_unsplit(processor) -> None:  # type: ignore[no-untyped-def]
    tok = processor.tokenizer
    for token in (LOC_TOKENS[0], LOC_TOKENS[1023], SEG_TOKENS[0], SEG_TOKENS[127], "<image>"):
        ids = tok.encode(token, add_special_tokens=False)
        assert len(ids) == 1 and ids[0] != tok.unk_token_id, token
    loc_ids = tok.convert_tokens_to_ids(LOC_TOKENS)
    assert len(set(loc_ids)) == 1024
    text = format_detections([((0.1, 0.2, 0.3, 0.4), "Fracture")])
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_processor_token_layout(processor) -> None:  # type: ignore[no-untyped-def]
    """``<image>×N <bos> prefix \\n suffix <eos>``, labels -100 on image+prefix+padding."""
    tok = processor.tokenizer
    n = processor.image_seq_length
    images = [np.zeros((112, 112, 3), dtype=np.uint8)] * 2
    prompts = ["<image>Detect Fracture", "<image>Is there a fracture?"]
    suffixes = ["<loc0001><loc0002><loc0003><loc0004> Fracture;", "Normal"]
    out = processor(images=images, text=prompts, suffix=suffixes, padding="longest",
                    return_tensors="pt")
    for row, (prompt, suffix) in enumerate(zip(prompts, suffixes)):
        mask = out["attention_mask"][row].bool()
        ids = out["input_ids"][row][mask].tolist()
        prefix_ids = tok.encode(prompt.removeprefix("<image>") + "\n", add_special_tokens=False)
        suffix_ids = tok.encode(suffix, add_special_tokens=False)
        expected = [processor.image_token_id] * n + [tok.bos_token_id] + prefix_ids
        expected += suffix_ids + [tok.eos_token_id]
        assert ids == expected
        labels = out["labels"][row]
        types = out["token_type_ids"][row]
        n_suffix = len(suffix_ids) + 1
        assert (labels[mask][:-n_suffix] == -100).all()
        assert labels[mask][-n_suffix:].tolist() == suffix_ids + [tok.eos_token_id]
        assert (labels[~mask] == -100).all()
        assert types[mask][-n_suffix:].tolist() == [1] * n_suffix
        assert (types[mask][:-n_suffix] == 0).all()
    # left padding: the shorter row starts with padding
    assert out["attention_mask"][1, 0] == 0 or out["attention_mask"][0, 0] == 0


@pytest.mark.parametrize("with_suffix", [False, True], ids=["prefix-only", "with-suffix"])
def test_encode_prompts_matches_processor(processor, with_suffix: bool) -> None:  # type: ignore[no-untyped-def]
    prompts = ["Detect Fracture", "Is there a fracture in this x-ray?"]
    suffixes = ["<loc0001><loc0002><loc0003><loc0004> Fracture;", "Normal"]
    out = processor(
        images=[np.zeros((112, 112, 3), dtype=np.uint8)] * 2,
        text=["<image>" + p for p in prompts],
        suffix=suffixes if with_suffix else None,
        padding="longest",
        return_tensors="pt",
    )
    ours = encode_prompts(
        processor.tokenizer, prompts, processor.image_seq_length,
        suffixes=suffixes if with_suffix else None,
    )
    for key in ("input_ids", "attention_mask", "token_type_ids", "labels"):
        assert torch.equal(ours[key], out[key].long()), key


@pytest.mark.parametrize("text_model", ["gemma", "gemma2"])
def test_tiny_model_sized_from_tokenizer_and_runs(text_model: str) -> None:
    model, proc = build_tiny_paligemma(text_model=text_model, image_size=64, patch=16,
                                       siglip_layers=1, text_layers=1)
    assert model.config.text_config.vocab_size == len(proc.tokenizer)
    assert model.lm_head.out_features == len(proc.tokenizer)
    assert proc.image_seq_length == (64 // 16) ** 2
    assert model.config.text_config.model_type == text_model
    enc = encode_prompts(proc.tokenizer, ["Detect Fracture"], proc.image_seq_length)
    with torch.inference_mode():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                       pixel_values=torch.zeros(1, 3, 64, 64)).logits
    assert logits.shape == (1, enc["input_ids"].shape[1], len(proc.tokenizer))
    assert torch.isfinite(logits).all()


def test_seed_decides_the_weights() -> None:
    kwargs = dict(image_size=32, patch=16, siglip_layers=1, text_layers=1)
    a, _ = build_tiny_paligemma(seed=3, **kwargs)
    b, _ = build_tiny_paligemma(seed=3, **kwargs)
    c, _ = build_tiny_paligemma(seed=4, **kwargs)
    wa = a.model.language_model.layers[0].self_attn.q_proj.weight
    assert torch.equal(wa, b.model.language_model.layers[0].self_attn.q_proj.weight)
    assert not torch.equal(wa, c.model.language_model.layers[0].self_attn.q_proj.weight)


def test_sincos_init_gives_neighbouring_loc_bins_and_patches_alike_codes() -> None:
    kwargs = dict(image_size=64, patch=16, siglip_layers=1, text_layers=1, seed=0)
    model, processor = build_tiny_paligemma(position_init="sincos", **kwargs)
    plain, _ = build_tiny_paligemma(**kwargs)
    table = model.get_input_embeddings().weight.detach()
    loc = processor.tokenizer.convert_tokens_to_ids(["<loc0500>", "<loc0501>", "<loc0600>", "<loc0900>"])
    rows = torch.nn.functional.normalize(table[loc], dim=1)
    similarity = (rows @ rows[0]).tolist()
    assert similarity[1] > 0.99 > similarity[2] > similarity[3]  # alike by bin distance
    # the rest of the vocabulary and every other weight are transformers' random ones
    other = processor.tokenizer.convert_tokens_to_ids(["Fracture", "Normal", "<eos>"])
    assert torch.equal(table[other], plain.get_input_embeddings().weight.detach()[other])
    q = lambda m: m.model.language_model.layers[0].self_attn.q_proj.weight  # noqa: E731
    assert torch.equal(q(model), q(plain))
    # SigLIP positions: a 4 x 4 grid, row-major; the patch right of patch 0 is closer than the
    # one two rows down, which is closer than the far corner
    pos = model.model.vision_tower.embeddings.position_embedding.weight.detach()
    unit = torch.nn.functional.normalize(pos, dim=1)
    near, down, corner = (unit[[1, 8, 15]] @ unit[0]).tolist()
    assert near > down > corner
    # the replaced rows keep the scale of the random rows
    old = plain.model.vision_tower.embeddings.position_embedding.weight.detach()
    assert abs(float(pos.pow(2).mean().sqrt()) / float(old.pow(2).mean().sqrt()) - 1) < 1e-4
    with pytest.raises(CheckpointError, match="position_init"):
        build_tiny_paligemma(position_init="learned", **kwargs)


def test_kv_heads_sets_the_key_value_heads_and_saves_and_reloads(tmp_path: Path) -> None:
    """``kv_heads``: Gemma's single key/value head by default; 4 gives each query head its own
    keys and values (full multi-head attention); the checkpoint reloads with it."""
    from transformers import PaliGemmaConfig

    kwargs = dict(image_size=32, patch=16, siglip_layers=1, text_layers=1)
    single, _ = build_tiny_paligemma(**kwargs)
    multi, proc = build_tiny_paligemma(kv_heads=4, **kwargs)
    assert single.config.text_config.num_key_value_heads == 1
    assert multi.config.text_config.num_key_value_heads == 4
    k = lambda m: m.model.language_model.layers[0].self_attn.k_proj.weight  # noqa: E731
    assert k(multi).shape[0] == 4 * k(single).shape[0]
    write_tiny_paligemma_checkpoint(tmp_path, kv_heads=4, **kwargs)
    assert PaliGemmaConfig.from_pretrained(tmp_path).text_config.num_key_value_heads == 4
    with pytest.raises(CheckpointError, match="kv_heads 3 must divide text_heads 4"):
        build_tiny_paligemma(kv_heads=3, **kwargs)
    with pytest.raises(CheckpointError, match="kv_heads must be a positive integer"):
        build_tiny_paligemma(kv_heads=0, **kwargs)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(CheckpointError, match="multiple of patch"):
        build_tiny_paligemma(image_size=100, patch=16)
    with pytest.raises(CheckpointError, match="text_model"):
        build_tiny_paligemma(text_model="llama")


def test_checkpoint_files_and_member_json(tmp_path: Path) -> None:
    spec = write_tiny_paligemma_checkpoint(
        tmp_path, "paligemma-detector", image_size=32, patch=16, siglip_layers=1,
        text_layers=1, threshold=0.3,
    )
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "member.json"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in names)
    read = read_member_spec(tmp_path)
    assert read == spec
    assert (read.kind, read.prompt, read.image_size, read.threshold) == (
        "paligemma-detector", "Detect Fracture", 32, 0.3,
    )
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["TaskHeadPaliGemmaForConditionalGeneration"]


def test_saved_processor_keeps_layout_and_head_token_count(tmp_path: Path) -> None:
    from transformers import PaliGemmaProcessor

    write_tiny_paligemma_checkpoint(tmp_path, "paligemma-detector", image_size=32, patch=16,
                                    siglip_layers=1, text_layers=1, task_head=5)
    proc = PaliGemmaProcessor.from_pretrained(tmp_path, local_files_only=True)
    assert proc.image_seq_length == 5
    suffixes = ["Normal", "<loc0001><loc0002><loc0003><loc0004> Fracture;"]
    out = proc(images=[np.zeros((32, 32, 3), dtype=np.uint8)] * 2,
               text=["<image>Detect Fracture", "<image>Detect"], suffix=suffixes,
               padding="longest", return_tensors="pt")
    ours = encode_prompts(proc.tokenizer, ["Detect Fracture", "Detect"], 5, suffixes=suffixes)
    for key in ours:
        assert torch.equal(ours[key], out[key].long()), key
