"""Tiny random-init PaliGemma members, built offline, for tests and the demo members.

Real PaliGemma weights and its 257k-token SentencePiece model cannot be had here (no hub), so
this module builds the same architecture at toy size:

- a real ``GemmaTokenizer`` (BPE, byte fallback, ``" " -> "▁"`` like Gemma's) over a small
  vocabulary covering the prompts and answers the project uses, with ``<pad>``, ``<eos>``,
  ``<bos>``, ``<unk>`` at Gemma's ids 0..3 and single characters plus the 256 byte tokens as
  fallback, so any text still encodes and decodes to itself;
- a ``PaliGemmaProcessor`` over it, which adds ``<image>``, the 1,024 ``<locNNNN>`` and the 128
  ``<segNNN>`` tokens as never-split tokens, and a torchvision-backed ``SiglipImageProcessor``
  whose ``image_seq_length`` equals the image tokens the model produces;
- SigLIP + Gemma (PaliGemma 1) or Gemma 2 (PaliGemma 2) with the vocabulary sized from
  ``len(tokenizer)`` *after* the processor added its tokens, optionally with the task head.

:func:`write_tiny_paligemma_checkpoint` writes a real member checkpoint: ``save_pretrained``
(safetensors) model, processor and tokenizer, plus ``member.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    Gemma2Config,
    GemmaConfig,
    GemmaTokenizer,
    PaliGemmaConfig,
    PaliGemmaProcessor,
    SiglipImageProcessor,
    SiglipVisionConfig,
)

from ensembles.checkpoint import MemberSpec, save_paligemma_checkpoint
from ensembles.errors import CheckpointError
from ensembles.task_head import (
    TaskHeadPaliGemmaForConditionalGeneration,
    TaskHeadSettings,
    image_token_count,
)
from ensembles.types import MemberKind, ResizeMode

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
"""Gemma's special tokens at Gemma's ids (pad 0, eos 1, bos 2, unk 3)."""

WORDS: tuple[str, ...] = (
    "Detect", "detect", "Fracture", "fracture", "Fractures", "fractures", "Normal", "normal",
    "Is", "is", "Are", "are", "there", "a", "an", "any", "in", "on", "this", "the", "x-ray",
    "X-ray", "radiograph", "image", "bone", "Yes", "yes", "No", "no", "segment", "caption",
    "answer", "en",
)
"""Whole-word pieces (each also with a leading ``▁``): the prompts and answers in use."""

FALLBACK_CHARACTERS = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:?!-_'\"()/\n▁"
)

CLASSIFIER_PROMPT = "Is there a fracture in this x-ray?"
DETECTOR_PROMPT = "Detect Fracture"
CLASSIFIER_LABELS: tuple[str, str] = ("Fracture", "Normal")
DETECTOR_LABELS: tuple[str, ...] = ("Fracture",)
TEXT_MODELS: tuple[str, ...] = ("gemma", "gemma2")
POSITION_INITS: tuple[str, ...] = ("random", "sincos")
MEMBER_KINDS: tuple[str, ...] = (MemberKind.PALIGEMMA_CLASSIFIER, MemberKind.PALIGEMMA_DETECTOR)
QUANTIZABLE_TEXT: dict[str, int] = {"text_hidden": 128, "text_heads": 1, "head_dim": 128}
"""Tiny Gemma widths every bitsandbytes 4-bit kernel accepts (all projections 128 or 256 wide)."""


def build_tiny_tokenizer(extra_words: tuple[str, ...] = ()) -> GemmaTokenizer:
    """A small Gemma-style BPE tokenizer built without any download.

    Merges build each word left to right; the ``▁``-prefixed variants get the lower ranks so
    ``" Fracture"`` becomes the single piece ``▁Fracture`` as in Gemma.
    """
    vocab: dict[str, int] = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in FALLBACK_CHARACTERS:
        vocab.setdefault(char, len(vocab))
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    words = tuple(dict.fromkeys(WORDS + tuple(extra_words)))
    pieces = ["▁" + word for word in words] + list(words)
    for piece in pieces:
        for end in range(1, len(piece)):
            pair = (piece[:end], piece[end])
            for part in pair:
                vocab.setdefault(part, len(vocab))
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            vocab.setdefault(piece[: end + 1], len(vocab))
    merge_list: Any = merges  # tokenizers takes (left, right) pairs as well as strings
    return GemmaTokenizer(vocab=vocab, merges=merge_list)


def build_tiny_processor(
    image_size: int = 224,
    image_seq_length: int = 196,
    *,
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
    std: tuple[float, float, float] = (0.5, 0.5, 0.5),
) -> PaliGemmaProcessor:
    """The tokenizer plus a SigLIP image processor, joined as PaliGemma's processor.

    The processor adds ``<image>``, ``<locNNNN>`` and ``<segNNN>`` to the tokenizer, so size a
    model from ``len(processor.tokenizer)`` only after this.
    """
    image_processor = SiglipImageProcessor(
        size={"height": image_size, "width": image_size},
        image_mean=list(mean),
        image_std=list(std),
    )
    setattr(image_processor, "image_seq_length", image_seq_length)  # read by the processor
    return PaliGemmaProcessor(image_processor=image_processor, tokenizer=build_tiny_tokenizer())


def tiny_paligemma_config(
    vocab_size: int,
    image_token_id: int,
    *,
    text_model: str = "gemma",
    image_size: int = 224,
    patch: int = 16,
    siglip_hidden: int = 128,
    siglip_layers: int = 4,
    text_hidden: int = 128,
    text_layers: int = 2,
    task_head: bool | int | dict[str, Any] | None = False,
    text_heads: int | None = None,
    head_dim: int | None = None,
    kv_heads: int = 1,
) -> PaliGemmaConfig:
    """A PaliGemma config of the real architecture at toy width and depth.

    ``text_heads`` defaults to 4 (1 when ``text_hidden`` is not divisible by 4) and ``head_dim``
    to ``text_hidden // text_heads``; ``kv_heads`` key/value heads (Gemma 2B's one by default;
    it must divide ``text_heads``). For a model that
    bitsandbytes must quantise in 4-bit, every language-model projection must be a multiple of
    128 wide: use :data:`QUANTIZABLE_TEXT` (one head of 128, so q/k/v/o are 128 wide).
    """
    if text_model not in TEXT_MODELS:
        raise CheckpointError(
            f"text_model must be one of {', '.join(TEXT_MODELS)}, got {text_model!r}"
        )
    for name, value in (
        ("image_size", image_size), ("patch", patch), ("siglip_hidden", siglip_hidden),
        ("siglip_layers", siglip_layers), ("text_hidden", text_hidden),
        ("text_layers", text_layers),
        *((name, v) for name, v in (("text_heads", text_heads), ("head_dim", head_dim))
          if v is not None),
        ("kv_heads", kv_heads),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(f"{name} must be a positive integer, got {value!r}")
    if image_size % patch:
        raise CheckpointError(
            f"image_size {image_size} must be a multiple of patch {patch} (SigLIP patches)"
        )
    heads = 4 if siglip_hidden % 4 == 0 else 1
    vision = SiglipVisionConfig(
        hidden_size=siglip_hidden,
        intermediate_size=2 * siglip_hidden,
        num_hidden_layers=siglip_layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch,
        vision_use_head=False,
    )
    if text_heads is None:
        text_heads = 4 if text_hidden % 4 == 0 else 1
    if head_dim is None:
        head_dim = max(1, text_hidden // text_heads)
    if text_heads % kv_heads:
        raise CheckpointError(f"kv_heads {kv_heads} must divide text_heads {text_heads}")
    common: dict[str, Any] = dict(
        hidden_size=text_hidden,
        intermediate_size=2 * text_hidden,
        num_hidden_layers=text_layers,
        num_attention_heads=text_heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab_size,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        max_position_embeddings=2048,
    )
    text: GemmaConfig | Gemma2Config
    if text_model == "gemma":
        text = GemmaConfig(**common)
    else:
        text = Gemma2Config(**common, query_pre_attn_scalar=head_dim, sliding_window=512)
    settings = TaskHeadSettings.parse(task_head)
    config = PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        vocab_size=vocab_size,
        projection_dim=text_hidden,
        hidden_size=text_hidden,
    )
    if settings is not None:
        config.task_head = settings.to_dict()
    return config


def build_tiny_paligemma(
    text_model: str = "gemma",
    image_size: int = 224,
    patch: int = 16,
    siglip_hidden: int = 128,
    siglip_layers: int = 4,
    text_hidden: int = 128,
    text_layers: int = 2,
    task_head: bool | int | dict[str, Any] | None = False,
    seed: int = 0,
    position_init: str = "random",
    text_heads: int | None = None,
    head_dim: int | None = None,
    kv_heads: int = 1,
) -> tuple[TaskHeadPaliGemmaForConditionalGeneration, PaliGemmaProcessor]:
    """A random-init tiny PaliGemma (float32, eval mode) and its processor.

    Args:
        text_model: ``"gemma"`` (PaliGemma 1) or ``"gemma2"`` (PaliGemma 2).
        image_size: square input side; must be a multiple of ``patch``.
        patch: SigLIP patch side.
        siglip_hidden: SigLIP width (4 heads when divisible by 4).
        siglip_layers: SigLIP depth.
        text_hidden: Gemma width (also the projector's output width).
        text_layers: Gemma depth.
        task_head: ``False`` for the stock projector, ``True`` for the paper's 256-query head,
            an int or ``{"num_queries": N}`` for another query count.
        seed: weights are a function of the arguments and this seed only; the global RNG is
            left as it was.
        position_init: ``"random"`` (transformers' initialisation) or ``"sincos"``: see
            :func:`sincos_position_init`.
        text_heads: Gemma attention heads (see :func:`tiny_paligemma_config`).
        head_dim: Gemma head width (see :func:`tiny_paligemma_config`).
        kv_heads: Gemma key/value heads (see :func:`tiny_paligemma_config`).
    """
    if position_init not in POSITION_INITS:
        raise CheckpointError(
            f"position_init must be one of {', '.join(POSITION_INITS)}, got {position_init!r}"
        )
    processor = build_tiny_processor(image_size)
    tokenizer = processor.tokenizer
    config = tiny_paligemma_config(
        len(tokenizer),
        tokenizer.convert_tokens_to_ids(processor.image_token),
        text_model=text_model,
        image_size=image_size,
        patch=patch,
        siglip_hidden=siglip_hidden,
        siglip_layers=siglip_layers,
        text_hidden=text_hidden,
        text_layers=text_layers,
        task_head=task_head,
        text_heads=text_heads,
        head_dim=head_dim,
        kv_heads=kv_heads,
    )
    count = image_token_count(config)
    processor.image_seq_length = count
    processor.image_processor.image_seq_length = count
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TaskHeadPaliGemmaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    if position_init == "sincos":
        loc_ids = tokenizer.convert_tokens_to_ids([f"<loc{i:04d}>" for i in range(1024)])
        sincos_position_init(model, loc_ids)
    return model.eval(), processor


def sincos_code(positions: torch.Tensor, width: int, *, low: float = 0.25,
                high: float = 32.0) -> torch.Tensor:
    """Sine/cosine features of positions in ``[0, 1]``: ``(n,)`` to ``(n, width)``.

    ``width // 2`` frequencies, geometric from ``low`` to ``high`` cycles over the unit range;
    the dot product of two codes is then a smooth kernel of their distance, about
    ``1 / high`` wide (32 of 1,024 loc bins at the default).
    """
    half = width // 2
    freqs = torch.logspace(torch.log10(torch.tensor(low)), torch.log10(torch.tensor(high)), half)
    angles = 2.0 * torch.pi * positions.double().unsqueeze(1) * freqs.double().unsqueeze(0)
    code = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if code.shape[1] < width:  # odd width: one constant column
        code = torch.cat([code, torch.zeros(code.shape[0], width - code.shape[1], dtype=code.dtype)], 1)
    return code.float()


def _rescaled(code: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``code`` scaled to the root-mean-square of ``like`` (the rows it replaces)."""
    rms = float(like.float().pow(2).mean().sqrt())
    return code * (rms / float(code.pow(2).mean().sqrt()))


def sincos_position_init(model: Any, loc_ids: list[int]) -> None:
    """Give a from-scratch tiny PaliGemma smooth position codes where it must learn positions.

    - SigLIP's position embeddings become 2-D sine/cosine codes of each patch's centre (half
      the width for x, half for y), as ViT-MAE fixes them; they stay trainable.
    - The 1,024 ``<locNNNN>`` token embeddings (tied with the output head) become 1-D codes
      of the bin's position, so neighbouring bins start alike and a box coordinate is a linear
      read-out of the position the patch tokens carry.

    Both keep the scale of the random rows they replace. Why: trained from random rows, the
    tiny detector's loc tokens stayed at the constant guess (every bin an unrelated class).
    Measured in the demo (2000 CPU steps): not enough on its own; the loc tokens still stayed
    at a constant box while the decision token learned.
    """
    vision = model.model.vision_tower
    table = vision.embeddings.position_embedding.weight
    count, width = int(table.shape[0]), int(table.shape[1])
    grid = int(round(count ** 0.5))
    if grid * grid != count:
        raise CheckpointError(f"SigLIP has {count} position embeddings, not a square grid")
    centres = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")  # row-major, as SigLIP's patches
    code = torch.cat([sincos_code(xs.flatten(), width // 2),
                      sincos_code(ys.flatten(), width - width // 2)], dim=1)
    embeddings = model.get_input_embeddings().weight
    bins = (torch.arange(len(loc_ids), dtype=torch.float64) + 0.5) / len(loc_ids)
    ids = torch.tensor(loc_ids, dtype=torch.long)
    with torch.no_grad():
        table.copy_(_rescaled(code, table))
        embeddings[ids] = _rescaled(sincos_code(bins, int(embeddings.shape[1])), embeddings[ids])


def default_spec(
    kind: str,
    *,
    image_size: int,
    name: str | None = None,
    prompt: str | None = None,
    labels: tuple[str, ...] | None = None,
    threshold: float = 0.5,
    options: dict[str, Any] | None = None,
) -> MemberSpec:
    """The ``member.json`` of a tiny PaliGemma member of ``kind``."""
    if kind not in MEMBER_KINDS:
        raise CheckpointError(f"kind must be one of {', '.join(MEMBER_KINDS)}, got {kind!r}")
    classifier = kind == MemberKind.PALIGEMMA_CLASSIFIER
    return MemberSpec(
        kind=kind,
        name=name or ("tiny-pg-cls" if classifier else "tiny-pg-det"),
        image_size=image_size,
        resize=ResizeMode.SQUASH,
        prompt=prompt or (CLASSIFIER_PROMPT if classifier else DETECTOR_PROMPT),
        labels=tuple(labels or (CLASSIFIER_LABELS if classifier else DETECTOR_LABELS)),
        threshold=threshold,
        options=dict(options or {}),
    )


def write_tiny_paligemma_checkpoint(
    directory: str | Path,
    kind: str = MemberKind.PALIGEMMA_CLASSIFIER,
    prompt: str | None = None,
    *,
    name: str | None = None,
    labels: tuple[str, ...] | None = None,
    threshold: float = 0.5,
    options: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> MemberSpec:
    """Build a tiny PaliGemma and write it as a member checkpoint of ``kind``.

    Args:
        directory: created if needed.
        kind: ``"paligemma-classifier"`` or ``"paligemma-detector"``.
        prompt: defaults to the paper's prompt style for the kind.
        name: display name in ``member.json``.
        labels: answers (classifier) or box labels (detector).
        threshold: the member's decision threshold in ``member.json``.
        options: kind-specific ``member.json`` options.
        **model_kwargs: passed to :func:`build_tiny_paligemma` (``image_size``, ``task_head``,
            ``text_model``, ``seed``...).

    Returns:
        The spec written to ``member.json``.
    """
    model, processor = build_tiny_paligemma(**model_kwargs)
    spec = default_spec(
        kind,
        image_size=int(getattr(model.config.vision_config, "image_size")),
        name=name,
        prompt=prompt,
        labels=labels,
        threshold=threshold,
        options=options,
    )
    save_paligemma_checkpoint(directory, model, processor, spec)
    return spec
