"""The paper's task-attention head between SigLIP and PaliGemma's projector.

A fixed set of learnable queries (256 in the paper) attends, through one head of
cross-attention, over the SigLIP patch embeddings; the attended vectors then go through the
stock projector's ``linear`` to the language model's width. The language model therefore sees
``num_queries`` image tokens whatever the image size (224 px gives 256 patches at patch 14,
896 px gives 4,096), which keeps the 448/896 px members as cheap in the language model as the
224 px one and lets the head learn which patches matter for the task.

How it sits in transformers 5 (see docs/stack-notes.md):

- :class:`TaskAttentionProjector` subclasses ``PaliGemmaMultiModalProjector`` and keeps its
  ``.linear``, so a stock checkpoint's projector weights load into it unchanged.
- :class:`TaskHeadPaliGemmaForConditionalGeneration` is PaliGemma that installs the head when
  ``config.task_head`` is set (``{"num_queries": 256}``), and is plain PaliGemma otherwise; it is
  the one class the project loads PaliGemma checkpoints with, with or without a head.
- transformers leaves an unknown bare ``nn.Parameter`` as uninitialised memory when its key is
  missing from a checkpoint (values like 4e30 were seen). The model class initialises the
  head itself in ``initialize_weights`` (leaving loaded parameters alone), and
  :func:`ensure_task_head_initialised` re-initialises it from a fixed seed after loading a
  checkpoint that lacks it, so a fresh head is finite and reproducible.
- The number of ``<image>`` tokens in the prompt must equal :func:`image_token_count`; the
  processor's ``image_seq_length`` has to follow (:func:`sync_processor_image_tokens`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration
from transformers import initialization as hf_init
from transformers.models.paligemma.modeling_paligemma import PaliGemmaMultiModalProjector

from ensembles.errors import CheckpointError

logger = logging.getLogger(__name__)

DEFAULT_NUM_QUERIES = 256
"""The paper's query count: the language model sees 256 image tokens at any resolution."""

FRESH_HEAD_SEED = 0
"""Seed of a head initialised because the checkpoint has none (reproducible outputs)."""

PROJECTOR_PREFIX = "model.multi_modal_projector."


@dataclass(frozen=True)
class TaskHeadSettings:
    """What ``config.task_head`` holds.

    Attributes:
        num_queries: learnable queries, hence image tokens the language model sees.
    """

    num_queries: int = DEFAULT_NUM_QUERIES

    def __post_init__(self) -> None:
        if isinstance(self.num_queries, bool) or not isinstance(self.num_queries, int):
            raise CheckpointError(
                f"task_head num_queries must be an integer, got {self.num_queries!r}"
            )
        if self.num_queries < 1:
            raise CheckpointError(
                f"task_head num_queries must be >= 1 (the paper uses 256), got {self.num_queries}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored as ``config.task_head``."""
        return {"num_queries": self.num_queries}

    @classmethod
    def parse(cls, value: Any) -> "TaskHeadSettings | None":
        """Accept ``None``/``False`` (no head), ``True`` (256 queries), an int or a mapping.

        Raises:
            CheckpointError: anything else, or a mapping with unknown keys.
        """
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(num_queries=value)
        if isinstance(value, TaskHeadSettings):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"num_queries"})
            if unknown:
                raise CheckpointError(
                    f"task_head has unknown key(s) {', '.join(unknown)}; valid: num_queries"
                )
            return cls(num_queries=value.get("num_queries", DEFAULT_NUM_QUERIES))
        raise CheckpointError(
            "task_head must be null, true, a query count or {'num_queries': N}, "
            f"got {value!r}"
        )


def task_head_settings(config: PaliGemmaConfig) -> TaskHeadSettings | None:
    """The head a PaliGemma config asks for (``None``: the stock projector)."""
    return TaskHeadSettings.parse(getattr(config, "task_head", None))


def image_token_count(config: PaliGemmaConfig) -> int:
    """How many ``<image>`` tokens the prompt must carry for this model.

    ``num_queries`` with the head, else one per SigLIP patch.
    """
    settings = task_head_settings(config)
    if settings is not None:
        return settings.num_queries
    vision: Any = config.vision_config
    return int((vision.image_size // vision.patch_size) ** 2)


class TaskAttentionProjector(PaliGemmaMultiModalProjector):
    """Learnable queries cross-attending over SigLIP patches, then the stock ``linear``.

    Single-head scaled dot-product attention: the patch embeddings are layer-normalised, the
    queries, keys and values projected (``query_proj``, ``key_proj``, ``value_proj``), the
    attended vectors projected back (``out_proj``) and passed through the projector's
    ``linear``. The names avoid ``q_proj``/``k_proj`` so a language-model LoRA regex can never
    pick the head up by accident.
    """

    def __init__(self, config: PaliGemmaConfig, num_queries: int = DEFAULT_NUM_QUERIES) -> None:
        super().__init__(config)
        vision: Any = config.vision_config
        width = int(vision.hidden_size)
        self.num_queries = int(num_queries)
        self.queries = nn.Parameter(torch.empty(self.num_queries, width))
        self.key_norm = nn.LayerNorm(width, eps=1e-6)
        self.query_proj = nn.Linear(width, width)
        self.key_proj = nn.Linear(width, width)
        self.value_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)
        self.reset_task_head()

    def head_parameters(self) -> Iterable[tuple[str, nn.Parameter]]:
        """The head's own parameters (everything but the stock ``linear``)."""
        return (
            (name, param)
            for name, param in self.named_parameters()
            if not name.startswith("linear.")
        )

    @torch.no_grad()
    def reset_task_head(
        self, generator: torch.Generator | None = None, *, only_uninitialised: bool = False
    ) -> None:
        """Initialise the head (never ``linear``, which may hold loaded projector weights).

        Queries ~ N(0, 1) so that, after Xavier-initialised projections, the attention logits
        have a spread of order one and the queries start out looking at different patches
        (with HF's default N(0, 0.02) every query would average all patches alike).

        Args:
            generator: RNG for a reproducible head; the global one when ``None``.
            only_uninitialised: leave parameters transformers marked as loaded alone (used
                inside ``from_pretrained``, where part of the model came from the checkpoint).
        """
        if self.queries.device.type == "meta":
            return
        init: Any = hf_init if only_uninitialised else nn.init
        init.normal_(self.queries, mean=0.0, std=1.0, generator=generator)
        for layer in (self.query_proj, self.key_proj, self.value_proj, self.out_proj):
            init.xavier_uniform_(layer.weight, generator=generator)
            init.zeros_(layer.bias)
        init.ones_(self.key_norm.weight)
        init.zeros_(self.key_norm.bias)

    def attend(self, image_features: torch.Tensor) -> torch.Tensor:
        """``(B, patches, D)`` SigLIP features to ``(B, num_queries, D)`` attended features."""
        if image_features.ndim != 3:
            raise ValueError(
                f"task head expects SigLIP features (batch, patches, width), got shape "
                f"{tuple(image_features.shape)}"
            )
        batch = image_features.shape[0]
        keys_in = self.key_norm(image_features)
        queries = self.query_proj(self.queries.to(keys_in.dtype)).unsqueeze(0)
        queries = queries.expand(batch, -1, -1)
        keys = self.key_proj(keys_in)
        values = self.value_proj(keys_in)
        attended = F.scaled_dot_product_attention(
            queries.unsqueeze(1), keys.unsqueeze(1), values.unsqueeze(1)
        ).squeeze(1)
        return self.out_proj(attended)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.attend(image_features))


class TaskHeadPaliGemmaForConditionalGeneration(PaliGemmaForConditionalGeneration):
    """PaliGemma with the task-attention head when ``config.task_head`` is set.

    Without ``config.task_head`` it is exactly stock PaliGemma, so one class loads every
    checkpoint the project meets.
    """

    def __init__(self, config: PaliGemmaConfig) -> None:
        super().__init__(config)
        settings = task_head_settings(config)
        if settings is not None:
            self.model.multi_modal_projector = TaskAttentionProjector(
                config, settings.num_queries
            )
            # Registers the new module with transformers' init/tying bookkeeping; modules
            # already initialised are skipped.
            self.post_init()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        # The generic init reaches the head's Linear layers (N(0, 0.02)) but not its bare
        # ``queries``, and dispatches the projector to PaliGemmaModel's ``_init_weights``, so
        # the head is initialised here, after it; parameters loaded from a checkpoint carry
        # transformers' "initialised" flag and are left alone.
        super().initialize_weights()
        head = self.task_head
        if head is not None:
            head.reset_task_head(only_uninitialised=True)

    @property
    def task_head(self) -> TaskAttentionProjector | None:
        """The head, or ``None`` for the stock projector."""
        projector = self.model.multi_modal_projector
        return projector if isinstance(projector, TaskAttentionProjector) else None


def ensure_task_head_initialised(
    model: PaliGemmaForConditionalGeneration,
    missing_keys: Iterable[str],
    *,
    seed: int = FRESH_HEAD_SEED,
) -> bool:
    """Initialise the head from ``seed`` when a loaded checkpoint did not hold it.

    Args:
        model: a loaded model (a PEFT wrapper's base model is fine).
        missing_keys: the ``missing_keys`` from ``from_pretrained(..., output_loading_info=True)``.
        seed: seed of the fresh head, so two loads give identical outputs.

    Returns:
        True when the head was (re)initialised.

    Raises:
        CheckpointError: the checkpoint held only part of the head, or its values are not finite.
    """
    projector = model.model.multi_modal_projector
    if not isinstance(projector, TaskAttentionProjector):
        return False
    head_keys = {PROJECTOR_PREFIX + name for name, _ in projector.head_parameters()}
    missing = head_keys & {key.removeprefix("base_model.model.") for key in missing_keys}
    if missing and missing != head_keys:
        raise CheckpointError(
            "checkpoint holds only part of the task head (missing "
            f"{', '.join(sorted(missing))}); re-save it with save_pretrained"
        )
    if missing:
        logger.warning(
            "checkpoint has no task-attention head; initialised a fresh %d-query head (seed %d)",
            projector.num_queries,
            seed,
        )
        generator = torch.Generator(device=projector.queries.device).manual_seed(seed)
        projector.reset_task_head(generator=generator)
    for name, param in projector.head_parameters():
        if not torch.isfinite(param.float()).all():
            raise CheckpointError(
                f"task head parameter {name} holds non-finite values after loading; the "
                "checkpoint is corrupt or was written by an incompatible version"
            )
    return bool(missing)


def sync_processor_image_tokens(processor: Any, config: PaliGemmaConfig) -> int:
    """Make the processor put as many ``<image>`` tokens as the model produces image features.

    Returns:
        The image token count now set on the processor and its image processor.
    """
    count = image_token_count(config)
    previous = getattr(processor, "image_seq_length", None)
    if previous != count:
        if previous is not None:
            logger.info("processor image_seq_length %s -> %d to match the model", previous, count)
        processor.image_seq_length = count
        if getattr(processor, "image_processor", None) is not None:
            processor.image_processor.image_seq_length = count
    return count
