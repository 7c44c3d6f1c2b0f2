"""Stock-format PaliGemma checkpoints built *without* the project's factory (``ensembles.demo_arch.paligemma``).

What a site brings: ``PaliGemmaForConditionalGeneration.save_pretrained`` plus
``PaliGemmaProcessor.save_pretrained``, with a Gemma tokenizer laid out however its maker laid
it out. Each builder argument is one way real checkpoints differ from the project's own:

- ``specials``: the order of ``<unk> <bos> <eos> <pad>`` (Gemma has pad 0, eos 1, bos 2, unk 3;
  the default here is another order, so nothing may assume Gemma's ids);
- ``loc``: where the ``<locNNNN>`` tokens are: ``"front"`` (ids right after the specials, before
  the words), ``"interleaved"`` (``<loc>`` and ``<seg>`` alternating: not contiguous), or
  ``"missing"`` (the saved tokenizer has none: the processor adds them at load as new ids);
- ``text_model``: a Gemma 1 (PaliGemma 1) or Gemma 2 (PaliGemma 2) language model;
- ``legacy_keys``: weight names as transformers 4 wrote them (``language_model.model.*``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    Gemma2Config,
    GemmaConfig,
    GemmaTokenizer,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    SiglipImageProcessor,
    SiglipVisionConfig,
)

LOC = [f"<loc{i:04d}>" for i in range(1024)]
SEG = [f"<seg{i:03d}>" for i in range(128)]
WORDS = ("Detect", "Fracture", "Fractured", "Normal", "Is", "there", "a", "fracture", "in", "this",
         "x-ray", "Broken", "Intact")
CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:?!-_'\"()/\n▁<>"
IMAGE_SIZE, PATCH = 32, 16


def stock_tokenizer(specials: tuple[str, ...] = ("<unk>", "<bos>", "<eos>", "<pad>"),
                    loc: str = "front") -> GemmaTokenizer:
    """A Gemma BPE tokenizer with its own vocabulary order (see the module docstring)."""
    vocab: dict[str, int] = {token: index for index, token in enumerate(specials)}
    if loc == "front":
        for token in LOC + SEG:
            vocab[token] = len(vocab)
    elif loc == "interleaved":
        for index, token in enumerate(LOC):
            vocab[token] = len(vocab)
            if index < len(SEG):
                vocab[SEG[index]] = len(vocab)
    for char in CHARACTERS:
        vocab.setdefault(char, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in ["▁" + w for w in WORDS] + list(WORDS):
        for end in range(1, len(word)):
            pair = (word[:end], word[end])
            vocab.setdefault(word[: end + 1], len(vocab))
            if pair not in merges:
                merges.append(pair)
    merge_list: Any = merges
    tokenizer = GemmaTokenizer(vocab=vocab, merges=merge_list)
    if loc != "missing":
        tokenizer.add_tokens(LOC + SEG)  # matched whole; ids stay where the vocabulary put them
    return tokenizer


def stock_checkpoint(directory: Path, *, text_model: str = "gemma2", loc: str = "front",
                     specials: tuple[str, ...] = ("<unk>", "<bos>", "<eos>", "<pad>"),
                     legacy_keys: bool = False, seed: int = 0) -> Path:
    """Write a random-init stock PaliGemma ``save_pretrained`` folder (model + processor)."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = stock_tokenizer(specials, loc)
    saved_tokenizer = copy.deepcopy(tokenizer)  # before the processor adds anything
    image_processor = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                           image_mean=[0.5] * 3, image_std=[0.5] * 3)
    count = (IMAGE_SIZE // PATCH) ** 2
    setattr(image_processor, "image_seq_length", count)
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    vocab = len(processor.tokenizer)
    common: dict[str, Any] = dict(
        hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=1,
        num_key_value_heads=1, head_dim=128, vocab_size=vocab,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    text: Any = GemmaConfig(**common) if text_model == "gemma" else Gemma2Config(
        **common, query_pre_attn_scalar=128, sliding_window=64)
    config = PaliGemmaConfig(
        vision_config=SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, image_size=IMAGE_SIZE,
                                         patch_size=PATCH, vision_use_head=False),
        text_config=text, image_token_index=processor.image_token_id, vocab_size=vocab,
        projection_dim=128, hidden_size=128,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PaliGemmaForConditionalGeneration(config)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    if loc == "missing":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (directory / name).unlink(missing_ok=True)
        saved_tokenizer.save_pretrained(directory)
    if legacy_keys:
        _to_legacy_keys(directory / "model.safetensors")
    return directory


LEGACY_PREFIXES = (
    ("model.language_model.", "language_model.model."),
    ("model.vision_tower.", "vision_tower.vision_model."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("lm_head.", "language_model.lm_head."),
)
"""transformers 5 names -> the names transformers 4.4x wrote for PaliGemma."""


def _to_legacy_keys(path: Path) -> None:
    tensors = load_file(path)
    renamed = {}
    for key, value in tensors.items():
        new = key
        for current, legacy in LEGACY_PREFIXES:
            if key.startswith(current):
                new = legacy + key[len(current):]
                break
        renamed[new] = value
    save_file(renamed, path, metadata={"format": "pt"})


def edit_json(path: Path, **changes: Any) -> None:
    """Change top-level (or ``a.b`` nested) keys of a JSON file in place."""
    data = json.loads(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    path.write_text(json.dumps(data))
