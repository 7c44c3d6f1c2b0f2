"""The real PaliGemma 2 architectures the GPU and real-size benches build, defined once.

Used by :mod:`bench.gpu_members` (random init straight on a GPU) and :mod:`bench.real_size`
(random safetensors checkpoints loaded through the project's loader), so both measure the same
models. Sizes are the published PaliGemma 2 configurations at 224 px:

- SigLIP So400m/14: hidden 1152, MLP 4304, 27 layers, 16 heads, patch 14 (256 patches);
- Gemma 2 2B (``pg2-3b``): hidden 2304, MLP 9216, 26 layers, 8 heads, 4 KV heads, head_dim 256;
- Gemma 2 9B (``pg2-10b``): hidden 3584, MLP 14336, 42 layers, 16 heads, 8 KV heads, head_dim
  256;
- vocabulary 257,216; ``query_pre_attn_scalar`` = head_dim; Gemma 2's defaults for the rest
  (sliding window 4096, attention and final logit soft-caps 50 and 30, tied embeddings).

The task head (``task_head`` > 0: ``config.task_head = {"num_queries": N}``, see
:mod:`ensembles.task_head`) is off in ``PG2_*`` (stock PaliGemma) and on where a bench asks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence


@dataclass(frozen=True)
class PaliGemmaSize:
    """Architecture of one PaliGemma variant (SigLIP + Gemma 2)."""

    name: str
    image_size: int
    patch: int
    vision_hidden: int
    vision_mlp: int
    vision_layers: int
    vision_heads: int
    text_hidden: int
    text_mlp: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    head_dim: int
    vocab_size: int | None  # None: the tokenizer's length (tiny)
    quantization: str | None = None
    task_head: int = 0  # queries of the task-attention head; 0: the stock projector

    @property
    def image_tokens(self) -> int:
        """``<image>`` tokens the prompt carries: the head's queries, else one per patch."""
        return self.task_head or (self.image_size // self.patch) ** 2


PG2_3B = PaliGemmaSize(
    "pg2-3b", image_size=224, patch=14, vision_hidden=1152, vision_mlp=4304, vision_layers=27,
    vision_heads=16, text_hidden=2304, text_mlp=9216, text_layers=26, text_heads=8,
    text_kv_heads=4, head_dim=256, vocab_size=257216,
)
PG2_10B = replace(
    PG2_3B, name="pg2-10b", text_hidden=3584, text_mlp=14336, text_layers=42, text_heads=16,
    text_kv_heads=8,
)
PG2_10B_8BIT = replace(PG2_10B, name="pg2-10b-8bit", quantization="8bit")
PALIGEMMA_SIZES: dict[str, PaliGemmaSize] = {"pg2-3b": PG2_3B, "pg2-10b-8bit": PG2_10B_8BIT}
TINY_PG2 = replace(
    PG2_3B, name="tiny-pg2", patch=16, vision_hidden=64, vision_mlp=128, vision_layers=2,
    vision_heads=4, text_hidden=64, text_mlp=128, text_layers=2, text_heads=4, text_kv_heads=1,
    head_dim=16, vocab_size=None,
)
TINY_SIZES: dict[str, PaliGemmaSize] = {
    "pg2-3b": TINY_PG2,
    "pg2-10b-8bit": replace(TINY_PG2, name="tiny-pg2-8bit", quantization="8bit"),
}
TINY_QUANT_PG2 = replace(
    TINY_PG2, name="tiny-pg2-q", text_hidden=256, text_mlp=512, text_heads=2, text_kv_heads=1,
    head_dim=128,
)
"""Tiny, but every quantised Linear is a multiple of 128 wide: bitsandbytes' AVX-512-BF16 4-bit
CPU kernel asserts ``N % 32 == 0`` on each output width (docs/stack-notes.md)."""


def paligemma_config(size: PaliGemmaSize, processor: Any) -> Any:
    """A ``PaliGemmaConfig`` of ``size`` whose token ids fit ``processor``'s tokenizer."""
    from transformers import Gemma2Config, PaliGemmaConfig, SiglipVisionConfig

    from ensembles.task_head import TaskHeadSettings

    tokenizer = processor.tokenizer
    vocab = size.vocab_size or len(tokenizer)
    if vocab < len(tokenizer):
        raise SystemExit(f"vocab_size {vocab} is smaller than the tokenizer ({len(tokenizer)})")
    vision = SiglipVisionConfig(
        hidden_size=size.vision_hidden, intermediate_size=size.vision_mlp,
        num_hidden_layers=size.vision_layers, num_attention_heads=size.vision_heads,
        image_size=size.image_size, patch_size=size.patch, vision_use_head=False,
    )
    text = Gemma2Config(
        hidden_size=size.text_hidden, intermediate_size=size.text_mlp,
        num_hidden_layers=size.text_layers, num_attention_heads=size.text_heads,
        num_key_value_heads=size.text_kv_heads, head_dim=size.head_dim,
        query_pre_attn_scalar=size.head_dim, vocab_size=vocab, pad_token_id=0, eos_token_id=1,
        bos_token_id=2,
    )
    config = PaliGemmaConfig(
        vision_config=vision, text_config=text, vocab_size=vocab,
        image_token_index=tokenizer.convert_tokens_to_ids(processor.image_token),
        projection_dim=size.text_hidden, hidden_size=size.text_hidden,
    )
    if size.task_head:
        config.task_head = TaskHeadSettings(size.task_head).to_dict()
    return config


def quantizable_linears(model: Any, skip: Sequence[str] | None = None) -> list[str]:
    """Names of the plain ``nn.Linear`` layers bitsandbytes quantises (those outside ``skip``).

    ``skip`` holds full names from the model root, matched as prefixes at a dot boundary, as
    ``llm_int8_skip_modules`` is; ``None``: :data:`ensembles.quant.SKIP_MODULES`. (Imported
    here, so importing this module, and ``--help``, stays free of torch.)
    """
    import torch

    from ensembles.quant import SKIP_MODULES

    prefixes = SKIP_MODULES if skip is None else tuple(skip)

    def skipped(name: str) -> bool:
        return any(name == s or name.startswith(s + ".") for s in prefixes)

    return [
        name for name, module in model.named_modules()
        if type(module) is torch.nn.Linear and not skipped(name)
    ]


def generate_fixed(member: Any, pictures: Sequence[Any], new_tokens: int) -> None:
    """Greedy ``generate`` of exactly ``new_tokens`` tokens on a detector member's own inputs.

    ``min_new_tokens`` = ``max_new_tokens`` and no grammar: the cost of an answer of that
    length whatever a random model would have emitted.
    """
    import torch

    with torch.inference_mode():
        inputs = member.encode(len(pictures))
        member.model.generate(
            **inputs, pixel_values=member.pixel_values(list(pictures)), do_sample=False,
            max_new_tokens=new_tokens, min_new_tokens=new_tokens,
        )
