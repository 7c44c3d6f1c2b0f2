"""What the PaliGemma classifier and detector share: loading, batching prompts, first-step logits.

Loading a checkpoint (:func:`load_paligemma`), always from local files:

- a plain ``save_pretrained`` directory with ``member.json``, processor and tokenizer; or
- a PEFT LoRA adapter directory (``adapter_config.json``) whose ``member.json`` names the base
  checkpoint in ``options["base"]`` (absolute, or relative to the adapter directory). The
  adapter is merged into a full-precision base for speed (``options["merge_lora"]``, default
  true) and kept as an adapter over a quantised one.

Prompts are laid out by :func:`ensembles.members.paligemma_inputs.encode_prompts`. Pixels come
from :mod:`ensembles.preprocess` with the checkpoint's own settings, so training and serving
share one preprocessing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ensembles.batching import AdaptiveBatches
from ensembles.checkpoint import MemberSpec, read_member_spec
from ensembles.errors import CheckpointError
from ensembles.members.paligemma_inputs import (
    ADAPTER_CONFIG,
    PROCESSOR_FILES,
    encode_prompts,
    position_ids_for,
)
from ensembles.preprocess import PreprocessConfig, preprocess_batch
from ensembles.quant import (
    check_quantizable_shapes,
    from_pretrained_kwargs,
    normalise_quantization,
    resolve_device,
    resolve_dtype,
)
from ensembles.task_head import (
    TaskHeadPaliGemmaForConditionalGeneration,
    TaskHeadSettings,
    ensure_task_head_initialised,
    image_token_count,
    sync_processor_image_tokens,
)

logger = logging.getLogger(__name__)

@dataclass
class LoadedPaliGemma:
    """A loaded model and processor, and how they were loaded."""

    model: Any
    processor: Any
    device: torch.device
    dtype: torch.dtype
    quantization: str | None
    adapter: str | None  # "merged", "unmerged" or None


def _resolve_base(checkpoint_dir: Path, spec: MemberSpec) -> Path:
    base = spec.options.get("base")
    if not isinstance(base, str) or not base:
        raise CheckpointError(
            f"checkpoint {str(checkpoint_dir)!r} is a LoRA adapter ({ADAPTER_CONFIG}) but its "
            "member.json has no options.base; set it to the base checkpoint directory"
        )
    path = Path(base)
    if not path.is_absolute():
        path = (checkpoint_dir / path).resolve()
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"LoRA base {str(path)!r} (member.json options.base of {str(checkpoint_dir)!r}) "
            "is not a save_pretrained directory with config.json"
        )
    return path


def _has_processor(directory: Path) -> bool:
    return all((directory / name).is_file() for name in PROCESSOR_FILES[:1]) and any(
        (directory / name).is_file() for name in PROCESSOR_FILES[1:]
    )


def load_paligemma(
    checkpoint_dir: str | Path,
    spec: MemberSpec | None = None,
    *,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype | None = None,
    quantization: str | None = None,
    merge_lora: bool | None = None,
) -> LoadedPaliGemma:
    """Load a PaliGemma member checkpoint (plain or LoRA adapter) under the device policy.

    Args:
        checkpoint_dir: the member checkpoint directory.
        spec: its ``member.json`` (read when ``None``).
        device: ``"cpu"``, ``"cuda[:N]"`` or ``"auto"``.
        dtype: compute dtype; bf16 on CUDA and float32 on CPU when ``None``.
        quantization: ``None``, ``"8bit"`` or ``"4bit"`` (the language model only).
        merge_lora: merge an adapter into the base; default: merge unless quantised.

    Raises:
        CheckpointError: missing files, a missing/partial task head, unknown weights.
        MemberUnavailableError: the device or quantisation cannot run here.
    """
    directory = Path(checkpoint_dir)
    spec = spec if spec is not None else read_member_spec(directory)
    from ensembles.member_check.paligemma import check_paligemma

    check_paligemma(directory, spec).raise_for_problems()  # before any weight is read
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(torch_device, dtype)
    mode = normalise_quantization(quantization)
    is_adapter = (directory / ADAPTER_CONFIG).is_file()
    weights_dir = _resolve_base(directory, spec) if is_adapter else directory
    if not (weights_dir / "config.json").is_file():
        raise CheckpointError(
            f"checkpoint {str(weights_dir)!r} has no config.json; write it with save_pretrained"
        )

    from transformers import PaliGemmaConfig, PaliGemmaProcessor

    config = PaliGemmaConfig.from_pretrained(weights_dir, local_files_only=True)
    requested = TaskHeadSettings.parse(spec.options.get("task_head"))
    present = TaskHeadSettings.parse(getattr(config, "task_head", None))
    if requested is not None and present is not None and requested != present:
        raise CheckpointError(
            f"member.json options.task_head {requested.to_dict()} disagrees with the model "
            f"config's task_head {present.to_dict()} in {str(weights_dir)!r}; remove one"
        )
    if requested is not None and present is None:
        config.task_head = requested.to_dict()

    if mode is not None:
        with torch.device("meta"):  # the layer shapes, without memory, before any weight is read
            skeleton = TaskHeadPaliGemmaForConditionalGeneration(config)
        check_quantizable_shapes(skeleton, mode, what=f"checkpoint {str(weights_dir)!r}")
    kwargs = from_pretrained_kwargs(torch_device, torch_dtype, mode)
    loaded: Any = TaskHeadPaliGemmaForConditionalGeneration.from_pretrained(
        weights_dir, config=config, output_loading_info=True, **kwargs
    )
    model: Any = loaded[0]
    info: dict[str, Any] = loaded[1]
    ensure_task_head_initialised(model, info.get("missing_keys", ()))
    head_prefix = "model.multi_modal_projector."
    other_missing = sorted(
        key for key in info.get("missing_keys", ()) if not key.startswith(head_prefix)
    )
    unexpected = sorted(info.get("unexpected_keys", ()))
    if other_missing or unexpected:
        raise CheckpointError(
            f"weights in {str(weights_dir)!r} do not fit the model: missing "
            f"{other_missing[:5]}, unexpected {unexpected[:5]}; was it written with a "
            "task head the config no longer names?"
        )
    if mode is None:
        model = model.to(torch_device)

    adapter: str | None = None
    if is_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, directory, is_trainable=False)
        merge = merge_lora
        if merge is None:
            merge = bool(spec.options.get("merge_lora", mode is None))
        if merge and mode is not None:
            raise CheckpointError(
                "cannot merge a LoRA adapter into a quantised base; set options.merge_lora "
                "to false or load without quantization"
            )
        if merge:
            model = model.merge_and_unload()
            adapter = "merged"
        else:
            adapter = "unmerged"

    processor_dir = directory if _has_processor(directory) else weights_dir
    processor = PaliGemmaProcessor.from_pretrained(processor_dir, local_files_only=True)
    sync_processor_image_tokens(processor, config)
    model.eval()
    return LoadedPaliGemma(model, processor, torch_device, torch_dtype, mode, adapter)


def core_config(model: Any) -> Any:
    """The PaliGemma config under a PEFT wrapper or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.config


class PaliGemmaMemberBase:
    """Shared machinery of the PaliGemma members; subclasses define ``_predict_batch``.

    Args:
        model: a ``PaliGemmaForConditionalGeneration`` (or the task-head subclass, or a PEFT
            wrapper), already on its device and dtype.
        processor: its ``PaliGemmaProcessor`` (the tokenizer and the image token count).
        spec: the member's ``member.json`` (prompt, labels, preprocessing, threshold).
        name: display name; ``spec.name`` when ``None``.
        batch_size: images per forward pass.

    Raises:
        CheckpointError: the spec is for another kind or has no prompt.
        ValueError: ``batch_size`` below 1.
    """

    kind: str = ""

    def __init__(
        self,
        model: Any,
        processor: Any,
        spec: MemberSpec,
        *,
        name: str | None = None,
        batch_size: int = 8,
    ) -> None:
        if spec.kind != self.kind:
            raise CheckpointError(
                f"member.json kind is {spec.kind!r} but this member is {self.kind!r}; load it "
                f"with create_member({spec.kind!r}, ...)"
            )
        if not spec.prompt:
            raise CheckpointError(
                f"{self.kind} needs a prompt in member.json (e.g. 'Detect Fracture'), got "
                f"{spec.prompt!r}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.spec = spec
        self.name = name or spec.name
        self.batch_size = batch_size
        self.batches = AdaptiveBatches(batch_size)
        self.preprocess_config = PreprocessConfig.from_spec(spec)
        config = core_config(model)
        vision_size = int(config.vision_config.image_size)
        if vision_size != spec.image_size:
            raise CheckpointError(
                f"member.json image_size {spec.image_size} differs from the model's SigLIP "
                f"image_size {vision_size}; fix member.json"
            )
        self.image_seq_length = sync_processor_image_tokens(processor, config)
        if self.image_seq_length != image_token_count(config):  # pragma: no cover - synced
            raise CheckpointError("processor image tokens do not match the model")
        self.device = next(model.parameters()).device
        self.pixel_dtype = _vision_dtype(model)

    def token_id(self, text: str, *, what: str) -> int:
        """The first token id of ``text`` as the model would write it right after ``\\n``."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if not ids:
            raise CheckpointError(f"{what} {text!r} tokenizes to nothing")
        return int(ids[0])

    def pixel_values(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Preprocess radiographs with the checkpoint's settings into the model's pixels."""
        array = preprocess_batch(images, self.preprocess_config)
        return torch.from_numpy(array).to(device=self.device, dtype=self.pixel_dtype)

    def encode(self, count: int, prompts: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Prompt tensors for ``count`` images (the checkpoint's prompt unless given)."""
        texts = list(prompts) if prompts is not None else [str(self.spec.prompt)] * count
        encoded = encode_prompts(
            self.tokenizer,
            texts,
            self.image_seq_length,
            image_token=getattr(self.processor, "image_token", "<image>"),
        )
        encoded.pop("labels")
        return {key: value.to(self.device) for key, value in encoded.items()}

    def first_step_logits(
        self, pixel_values: torch.Tensor, prompts: Sequence[str] | None = None
    ) -> torch.Tensor:
        """float32 ``(B, vocab)`` logits of the first answer token (a plain forward pass)."""
        inputs = self.encode(pixel_values.shape[0], prompts)
        out = self.model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            token_type_ids=inputs["token_type_ids"],
            position_ids=position_ids_for(inputs["attention_mask"]),
            pixel_values=pixel_values,
            use_cache=False,
            logits_to_keep=1,
        )
        return out.logits[:, -1, :].float()

    def predict(self, images: Sequence[np.ndarray]) -> list[Any]:
        """One :class:`~ensembles.types.MemberOutput` per image, in order, in batches."""
        with torch.inference_mode():  # out of device memory: the batch halves (ensembles.batching)
            return self.batches.run(images, lambda chunk: self._predict_batch(self.pixel_values(list(chunk))),
                                    owner=self.name)

    def scores(self, images: Sequence[np.ndarray]) -> list[float]:
        """Each image's score alone, in order: the first answer token's forward pass, no
        decoding (what :class:`~ensembles.symmetry_scored.SymmetryScoredMember` asks for)."""
        def step(chunk: Sequence[np.ndarray]) -> list[float]:
            found, _ = self.scores_from_logits(self.first_step_logits(self.pixel_values(list(chunk))))
            return [float(v) for v in found.tolist()]

        with torch.inference_mode():
            return self.batches.run(images, step, owner=self.name)

    def scores_from_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _predict_batch(self, pixel_values: torch.Tensor) -> list[Any]:
        raise NotImplementedError


def _vision_dtype(model: Any) -> torch.dtype:
    """The dtype SigLIP's patch embedding runs in (pixels must match it)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return base.model.vision_tower.embeddings.patch_embedding.weight.dtype
    except AttributeError:
        return torch.float32


def load_member_parts(
    checkpoint_dir: Path,
    *,
    device: str | None = "cpu",
    dtype: str | None = None,
    quantization: str | None = None,
) -> tuple[LoadedPaliGemma, MemberSpec]:
    """Read ``member.json`` and load the model the way the site config asks.

    A ``quantization`` argument wins over ``member.json`` ``options.quantization``.
    """
    spec = read_member_spec(checkpoint_dir)
    if quantization is None:
        quantization = spec.options.get("quantization")
    loaded = load_paligemma(
        checkpoint_dir, spec, device=device, dtype=dtype, quantization=quantization
    )
    return loaded, spec
