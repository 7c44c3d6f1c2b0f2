"""Building a PaliGemma for training: loading or creating it, what is trainable, writing it.

Two methods (the paper's):

- ``full``: the language model, the projector (with the task head) and ``lm_head`` train;
  SigLIP is frozen except its last ``siglip_unfreeze`` encoder layers (and then its final
  layer norm); ``-1`` trains all of SigLIP, for a model built from scratch.
- ``qlora``: the language model is loaded in 8-bit or 4-bit nf4 (double quant) and gets LoRA
  (r 16, alpha 32, dropout 0.05) on its ``q/k/v/o`` projections only (MLP optional); the
  projector (with the task head) and the unfrozen SigLIP layers train in full alongside, as
  PEFT ``modules_to_save``, so the adapter directory carries them and the member loader
  (``ensembles.members.paligemma_common``) restores them on top of the base.

Quantisation skips SigLIP, the projector and ``lm_head`` (:mod:`ensembles.quant`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ensembles.checkpoint import MemberSpec, read_member_spec, save_paligemma_checkpoint, write_member_spec
from ensembles.members.paligemma_common import load_paligemma
from ensembles.quant import LORA_TARGET_REGEX
from ensembles.task_head import TaskHeadSettings
from ensembles.types import ResizeMode
from ensembles.demo_arch.paligemma import build_tiny_paligemma
from train.train_config import PaliGemmaSection
from train.errors import RecipeError

logger = logging.getLogger(__name__)

LORA_MLP_TARGET_REGEX = (
    r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
)
"""The language model's attention and MLP projections (``lora_mlp = true``)."""


@dataclass
class BuiltModel:
    """A model ready to train, with its processor and the spec its checkpoints will carry."""

    model: Any  # PaliGemma, or a PEFT wrapper of it (qlora)
    processor: Any
    spec: MemberSpec
    base_dir: Path
    device: torch.device


def core_model(model: Any) -> Any:
    """The PaliGemma under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def siglip_layers(model: Any) -> Any:
    """SigLIP's encoder layers (``model.model.vision_tower.encoder.layers`` in transformers 5)."""
    return core_model(model).model.vision_tower.encoder.layers


def _last_layers(count: int, unfreeze: int) -> list[int]:
    if unfreeze < 0:
        return list(range(count))
    return list(range(max(0, count - unfreeze), count))


def freeze_for_full(model: Any, siglip_unfreeze: int) -> None:
    """Set ``requires_grad`` for the full fine-tune (see the module docstring)."""
    core = core_model(model)
    for param in core.parameters():
        param.requires_grad_(False)
    for module in (core.model.language_model, core.model.multi_modal_projector, core.lm_head):
        for param in module.parameters():
            param.requires_grad_(True)
    vision = core.model.vision_tower
    if siglip_unfreeze < 0:
        for param in vision.parameters():
            param.requires_grad_(True)
        return
    layers = vision.encoder.layers
    for index in _last_layers(len(layers), siglip_unfreeze):
        for param in layers[index].parameters():
            param.requires_grad_(True)
    if siglip_unfreeze > 0:
        for param in vision.post_layernorm.parameters():
            param.requires_grad_(True)


def trainable_siglip_layers(model: Any) -> list[int]:
    """Indices of SigLIP encoder layers with any trainable parameter (a PEFT copy counts)."""
    layers = siglip_layers(model)
    return [i for i, layer in enumerate(layers) if any(p.requires_grad for p in layer.parameters())]


def _modules_to_save(num_layers: int, siglip_unfreeze: int) -> list[str]:
    names = ["multi_modal_projector"]
    if siglip_unfreeze < 0:
        return names + ["vision_tower"]
    names += [f"vision_tower.encoder.layers.{i}" for i in _last_layers(num_layers, siglip_unfreeze)]
    if siglip_unfreeze > 0:
        names.append("vision_tower.post_layernorm")
    return names


def apply_qlora(model: Any, section: PaliGemmaSection, gradient_checkpointing: bool) -> Any:
    """Wrap a quantised PaliGemma with the paper's LoRA plus full-trained SigLIP/projector."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    config = LoraConfig(
        r=section.lora_r,
        lora_alpha=section.lora_alpha,
        lora_dropout=section.lora_dropout,
        target_modules=LORA_MLP_TARGET_REGEX if section.lora_mlp else LORA_TARGET_REGEX,
        modules_to_save=_modules_to_save(len(siglip_layers(model)), section.siglip_unfreeze),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _base_spec(base: Path) -> MemberSpec | None:
    try:
        return read_member_spec(base)
    except Exception:  # noqa: BLE001 - a stock save_pretrained directory has no member.json
        return None


def member_spec(
    kind: str,
    section: PaliGemmaSection,
    *,
    image_size: int,
    prompt: str,
    labels: tuple[str, ...],
    name: str,
    base_spec: MemberSpec | None,
    options: dict[str, Any],
) -> MemberSpec:
    """The ``member.json`` the trained checkpoint carries (normalisation kept from the base)."""
    mean = base_spec.mean if base_spec else (0.5, 0.5, 0.5)
    std = base_spec.std if base_spec else (0.5, 0.5, 0.5)
    return MemberSpec(
        kind=kind, name=section.name or name, image_size=image_size, resize=ResizeMode.SQUASH,
        mean=mean, std=std, prompt=prompt, labels=tuple(section.labels or labels),
        canny_blend=section.canny_blend, clahe=section.clahe, threshold=section.threshold,
        options=options,
    )


def build_model(
    kind: str,
    section: PaliGemmaSection,
    *,
    out: Path,
    device: str,
    precision: str,
    seed: int,
    prompt: str,
    labels: tuple[str, ...],
    name: str,
    gradient_checkpointing: bool,
) -> BuiltModel:
    """Load (or build from scratch) the model of a PaliGemma run and set what trains.

    A from-scratch tiny model is written to ``out/base`` first, so a QLoRA adapter has a base to
    point at and a resumed run starts from the very same weights.

    Raises:
        RecipeError: the base directory is not a PaliGemma ``save_pretrained`` directory.
    """
    base_dir = Path(section.base) if section.base else out / "base"
    options: dict[str, Any] = {}
    if section.task_head:
        options["task_head"] = TaskHeadSettings(section.task_head).to_dict()
    if not section.base:
        if not (base_dir / "config.json").is_file():
            tiny = dict(section.tiny)
            if section.task_head and "task_head" not in tiny:
                tiny["task_head"] = options["task_head"]
            try:
                model, processor = build_tiny_paligemma(**tiny, seed=seed)
            except TypeError as exc:
                raise RecipeError(f"[paligemma.tiny] has an invalid key: {exc}") from None
            size = int(getattr(model.config.vision_config, "image_size"))
            tiny_spec = member_spec(kind, section, image_size=size, prompt=prompt, labels=labels,
                                    name=name, base_spec=None, options={})
            save_paligemma_checkpoint(base_dir, model, processor, tiny_spec)
            del model
    if not (base_dir / "config.json").is_file():
        raise RecipeError(
            f"[paligemma] base {str(base_dir)!r} is not a save_pretrained PaliGemma directory "
            "(no config.json)"
        )
    from transformers import PaliGemmaConfig

    base_config = PaliGemmaConfig.from_pretrained(base_dir, local_files_only=True)
    present = TaskHeadSettings.parse(getattr(base_config, "task_head", None))
    if present is not None and "task_head" not in options:
        options["task_head"] = present.to_dict()
    image_size = int(getattr(base_config.vision_config, "image_size"))
    spec = member_spec(kind, section, image_size=image_size, prompt=prompt, labels=labels,
                       name=name, base_spec=_base_spec(base_dir), options=options)
    dtype = "bfloat16" if precision == "bf16" else "float32"
    quantization = section.quantization if section.method == "qlora" else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # a fresh task head is seeded by the loader; LoRA by this
        loaded = load_paligemma(base_dir, spec, device=device, dtype=dtype,
                                quantization=quantization, merge_lora=False)
        model = loaded.model
        if section.method == "qlora":
            model = apply_qlora(model, section, gradient_checkpointing)
        else:
            freeze_for_full(model, section.siglip_unfreeze)
            if gradient_checkpointing:
                model.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False}
                )
    core_model(model).config.use_cache = False
    return BuiltModel(model, loaded.processor, spec, base_dir.resolve(), loaded.device)


def save_member(built: BuiltModel, directory: Path, method: str) -> None:
    """Write the trained member: a full ``save_pretrained`` checkpoint, or (qlora) the adapter
    with ``options.base`` pointing at the base, plus processor and ``member.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    if method == "qlora":
        built.model.save_pretrained(directory)
        built.processor.save_pretrained(directory)
        options = dict(built.spec.options)
        options["base"] = str(built.base_dir)
        spec = MemberSpec(**{**built.spec.to_dict(), "options": options,
                             "mean": built.spec.mean, "std": built.spec.std,
                             "labels": built.spec.labels})
        write_member_spec(directory, spec)
    else:
        save_paligemma_checkpoint(directory, core_model(built.model), built.processor, built.spec)
