"""Turning a stock ``save_pretrained`` folder into a member checkpoint (``screen models import``).

A site downloads a checkpoint once (``model.save_pretrained(dir)`` and
``processor.save_pretrained(dir)``) and fine-tunes or validates it itself. What the member
loader needs beyond the weights is ``member.json`` (kind, prompt, input size, normalisation,
labels, threshold, and the use the site declares the model fit for). :func:`import_member`:

1. reads the source's config and refuses a model of another family than ``kind``;
2. copies the files a member needs (configs, safetensors, tokenizer files; never a pickle:
   those are listed as left behind), and with ``adapter`` puts the LoRA adapter on top, the
   source becoming ``base/`` inside the member folder;
3. writes ``member.json`` from the source's own settings (SigLIP's input size, the processor's
   mean and std, DETR's classes) and the options given;
4. runs every check of :mod:`ensembles.member_check` on the result, and only then renames the
   staging folder to ``out``: a failed import leaves nothing behind and never overwrites.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from ensembles.checkpoint import INTENDED_USES, MEMBER_JSON, IntendedUse, MemberSpec, write_member_spec
from ensembles.errors import CheckpointError
from ensembles.member_check import CheckReport, check_member
from ensembles.member_check.files import PICKLE_SUFFIXES, pickle_files, safetensors_files
from ensembles.types import MemberKind, ResizeMode
from ensembles.preprocess import IMAGENET_MEAN, IMAGENET_STD

IMPORT_KINDS: dict[str, str] = {
    MemberKind.PALIGEMMA_CLASSIFIER: "paligemma",
    MemberKind.PALIGEMMA_DETECTOR: "paligemma",
    MemberKind.DETR: "detr",
}
"""Importable kinds and the ``config.json`` ``model_type`` each needs."""

DEFAULT_PROMPTS: dict[str, str] = {
    MemberKind.PALIGEMMA_CLASSIFIER: "Is there a fracture in this x-ray?",
    MemberKind.PALIGEMMA_DETECTOR: "Detect Fracture",
}
"""The paper's prompts; a fine-tune answers the prompt it was trained with (pass ``prompt``)."""

DEFAULT_LABELS: dict[str, tuple[str, ...]] = {
    MemberKind.PALIGEMMA_CLASSIFIER: ("Fracture", "Normal"),
    MemberKind.PALIGEMMA_DETECTOR: ("Fracture",),
}
DETR_IMAGE_SIZE = 800
"""DETR's own shortest side; the member letterboxes to a square of this side by default."""
COPIED_SUFFIXES: tuple[str, ...] = (".json", ".safetensors", ".model", ".txt", ".md")
"""What is copied: configs, weights, tokenizer files (``tokenizer.model`` is a protobuf), notes."""
ADAPTER_BASE = "base"


@dataclass(frozen=True)
class ImportOptions:
    """What the site declares about the model it imports.

    Attributes:
        kind: one of :data:`IMPORT_KINDS`.
        intended_use: ``clinical``, ``research`` or ``demo`` (no default: the site says it).
        name: display name in outputs (default: the output folder's name).
        prompt: the prompt the PaliGemma model was fine-tuned with (default: the paper's).
        image_size: the input side; PaliGemma's is fixed by its weights (given, it must agree);
            DETR's is the letterbox square (default: its processor's shortest side, or 800).
        labels: PaliGemma answers ``(positive, negative)`` / detector box label, or DETR's
            class names (default: the paper's answers, or the model's ``id2label``).
        threshold: the member's own decision threshold until an operating point is tuned.
        adapter: a PEFT LoRA adapter folder to put on top of the source model.
    """

    kind: str
    intended_use: str
    name: str | None = None
    prompt: str | None = None
    image_size: int | None = None
    labels: tuple[str, ...] | None = None
    threshold: float = 0.5
    adapter: Path | None = None


@dataclass
class ImportResult:
    """What the import wrote and left behind."""

    out: Path
    spec: MemberSpec
    report: CheckReport
    copied: list[str] = field(default_factory=list)
    left_behind: list[str] = field(default_factory=list)


def import_member(source: str | Path, out: str | Path, options: ImportOptions) -> ImportResult:
    """Import ``source`` as a member checkpoint in the new folder ``out`` (see the module doc).

    Raises:
        CheckpointError: a bad option, a source of another family or without safetensors,
            an existing non-empty ``out``, or a result that fails a check (every problem named).
    """
    src, target = Path(source), Path(out)
    _validate(src, target, options)
    config = _read_json(src / "config.json")
    if not safetensors_files(src):
        pickles = ", ".join(p.name for p in pickle_files(src))
        found = f" (found {pickles}: pickle, never loaded)" if pickles else ""
        raise CheckpointError(
            f"{str(src)!r} has no safetensors weights{found}; re-save the model with "
            "save_pretrained(..., safe_serialization=True) and import that folder"
        )
    family = IMPORT_KINDS[options.kind]
    if config.get("model_type") != family:
        raise CheckpointError(
            f"{str(src)!r} holds a {config.get('model_type')!r} model (config.json model_type); "
            f"--kind {options.kind} needs a {family!r} model"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.importing-{secrets.token_hex(4)}"
    staging.mkdir()
    copied: list[str] = []
    left_behind: list[str] = []
    try:
        model_dir = staging
        if options.adapter is not None:
            model_dir = staging / ADAPTER_BASE
            model_dir.mkdir()
            _copy_files(Path(options.adapter), staging, copied, left_behind, exclude=("config.json",))
        _copy_files(src, model_dir, copied, left_behind)
        spec = _spec(src, config, options, target.name)
        write_member_spec(staging, spec)
        report = check_member(staging, options.kind)
        report.directory = target
        if not report.ok:
            report.raise_for_problems()
        if target.exists():
            target.rmdir()  # empty (checked above); a member folder is never overwritten
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return ImportResult(target, spec, report, copied, left_behind)


def _validate(src: Path, target: Path, options: ImportOptions) -> None:
    if options.kind not in IMPORT_KINDS:
        raise CheckpointError(
            f"--kind must be one of {', '.join(IMPORT_KINDS)}, got {options.kind!r}"
        )
    if options.intended_use not in INTENDED_USES:
        raise CheckpointError(
            f"--intended-use must be one of {', '.join(INTENDED_USES)}, got {options.intended_use!r}"
        )
    if not (src / "config.json").is_file():
        raise CheckpointError(
            f"{str(src)!r} is not a save_pretrained folder (no config.json); save the model "
            "and its processor with save_pretrained first"
        )
    if options.adapter is not None and not (Path(options.adapter) / "adapter_config.json").is_file():
        raise CheckpointError(
            f"--adapter {str(options.adapter)!r} is not a PEFT adapter folder (no adapter_config.json)"
        )
    if options.adapter is not None and options.kind == MemberKind.DETR:
        raise CheckpointError("--adapter is for PaliGemma members; a DETR member has no LoRA")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CheckpointError(
            f"--out {str(target)!r} exists and is not an empty folder; import into a new folder "
            "(a member checkpoint is never overwritten in place)"
        )
    if target.resolve() == src.resolve():
        raise CheckpointError("--out must be a new folder, not the source folder")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {str(path)!r}: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{str(path)!r} is not a JSON object")
    return data


def _copy_files(source: Path, dest: Path, copied: list[str], left_behind: list[str],
                exclude: tuple[str, ...] = ()) -> None:
    """Copy the member-relevant files of ``source`` (flat, as save_pretrained writes them).

    Pickles (:data:`PICKLE_SUFFIXES`) and anything else are left behind and listed; a source
    ``member.json`` is replaced by the one this import writes.
    """
    for path in sorted(source.iterdir()):
        if not path.is_file() or path.name == MEMBER_JSON:
            continue
        if path.suffix in COPIED_SUFFIXES and path.suffix not in PICKLE_SUFFIXES \
                and path.name not in exclude:
            shutil.copy2(path, dest / path.name)
            copied.append(str(path))
        else:
            left_behind.append(str(path))


def _image_processor_settings(src: Path) -> dict[str, Any]:
    """``image_mean``/``image_std``/``size`` from the source's processor files, if any."""
    for name in ("preprocessor_config.json", "processor_config.json"):
        path = src / name
        if path.is_file():
            data = _read_json(path)
            nested = data.get("image_processor")
            return nested if isinstance(nested, dict) else data
    return {}


def _triple(values: Any, default: tuple[float, float, float]) -> tuple[float, float, float]:
    if isinstance(values, (list, tuple)) and len(values) == 3:
        return (float(values[0]), float(values[1]), float(values[2]))
    return default


def _spec(src: Path, config: dict[str, Any], options: ImportOptions, folder_name: str) -> MemberSpec:
    settings = _image_processor_settings(src)
    name = options.name or folder_name
    member_options: dict[str, Any] = {}
    if options.kind == MemberKind.DETR:
        found = settings.get("size")
        size: dict[str, Any] = found if isinstance(found, dict) else {}
        image_size = options.image_size or int(size.get("shortest_edge", DETR_IMAGE_SIZE))
        id2label = config.get("id2label") or {}
        labels = options.labels or tuple(str(id2label[k]) for k in sorted(id2label, key=int))
        return MemberSpec(
            kind=MemberKind.DETR, name=name, image_size=image_size, resize=ResizeMode.LETTERBOX,
            mean=_triple(settings.get("image_mean"), IMAGENET_MEAN),
            std=_triple(settings.get("image_std"), IMAGENET_STD),
            labels=labels, threshold=options.threshold, intended_use=cast(IntendedUse, options.intended_use),
        )
    vision = config.get("vision_config") or {}
    image_size = int(vision.get("image_size", 224))
    if options.image_size is not None and options.image_size != image_size:
        raise CheckpointError(
            f"--image-size {options.image_size} but the model's SigLIP takes {image_size} px "
            "(a PaliGemma's input size is fixed by its weights: import the 224, 448 or 896 "
            "checkpoint you want)"
        )
    if config.get("task_head"):
        member_options["task_head"] = config["task_head"]
    if options.adapter is not None:
        member_options["base"] = ADAPTER_BASE
    return MemberSpec(
        kind=options.kind, name=name, image_size=image_size, resize=ResizeMode.SQUASH,
        mean=_triple(settings.get("image_mean"), (0.5, 0.5, 0.5)),
        std=_triple(settings.get("image_std"), (0.5, 0.5, 0.5)),
        prompt=options.prompt or DEFAULT_PROMPTS[options.kind],
        labels=options.labels or DEFAULT_LABELS[options.kind],
        threshold=options.threshold, intended_use=cast(IntendedUse, options.intended_use), options=member_options,
    )
