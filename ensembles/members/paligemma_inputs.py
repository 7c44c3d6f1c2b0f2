"""What a PaliGemma member checkpoint holds beside its weights, and how prompts are laid out.

Here (not in :mod:`ensembles.members.paligemma_common`, which loads and runs members) so that
:mod:`ensembles.member_check.paligemma` can check a checkpoint's prompt encoding without
importing the member code that calls it.

Prompts follow PaliGemma's layout, the same the processor builds for training
(:func:`encode_prompts`; a test holds the two equal)::

    <image> x N  <bos>  prefix  \\n  [suffix <eos>]

with ``N`` the image tokens the model produces (patches, or the task head's queries), left
padding (scores and batched generation read the last position), ``token_type_ids`` 0 on the
prefix (attended bidirectionally, as PaliGemma was trained) and 1 on the suffix, ``labels``
-100 on image, prefix and padding.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

ADAPTER_CONFIG = "adapter_config.json"
"""The file that makes a checkpoint folder a PEFT LoRA adapter."""
PROCESSOR_FILES = ("processor_config.json", "tokenizer_config.json", "tokenizer.json")
"""The processor's config, then the tokenizer files (one of them is enough)."""


def encode_prompts(
    tokenizer: Any,
    prompts: Sequence[str],
    image_seq_length: int,
    *,
    image_token: str = "<image>",
    suffixes: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Tokenise prompts in PaliGemma's layout, left-padded (see the module docstring).

    Returns:
        ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels`` (``(B, L)`` long).

    Raises:
        ValueError: no prompts, or a suffix count that differs from the prompt count.
    """
    if not prompts:
        raise ValueError("encode_prompts needs at least one prompt")
    if suffixes is not None and len(suffixes) != len(prompts):
        raise ValueError(
            f"encode_prompts got {len(prompts)} prompts but {len(suffixes)} suffixes"
        )
    rows: list[tuple[list[int], list[int]]] = []
    for index, prompt in enumerate(prompts):
        prefix = f"{image_token * image_seq_length}{tokenizer.bos_token}{prompt}\n"
        prefix_ids = list(tokenizer.encode(prefix, add_special_tokens=False))
        suffix_ids: list[int] = []
        if suffixes is not None:
            suffix_ids = list(tokenizer.encode(suffixes[index], add_special_tokens=False))
            suffix_ids.append(int(tokenizer.eos_token_id))
        rows.append((prefix_ids, suffix_ids))
    length = max(len(p) + len(s) for p, s in rows)
    batch = len(rows)
    pad = int(tokenizer.pad_token_id)
    input_ids = torch.full((batch, length), pad, dtype=torch.long)
    attention = torch.zeros((batch, length), dtype=torch.long)
    token_types = torch.zeros((batch, length), dtype=torch.long)
    for row, (prefix_ids, suffix_ids) in enumerate(rows):
        ids = prefix_ids + suffix_ids
        start = length - len(ids)
        input_ids[row, start:] = torch.tensor(ids, dtype=torch.long)
        attention[row, start:] = 1
        token_types[row, start + len(prefix_ids) :] = 1
    labels = input_ids.masked_fill(token_types == 0, -100)
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "token_type_ids": token_types,
        "labels": labels,
    }


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """PaliGemma's 1-based positions under left padding (what ``generate`` computes)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0) + 1
