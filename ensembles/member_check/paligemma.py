"""What the PaliGemma members rely on, checked on a checkpoint folder before any weight is read.

A stock ``save_pretrained`` folder can look right and still break a member in ways nobody would
notice at once: a tokenizer whose loc tokens the processor has to add (new ids the model never
learned, so every box is noise), answer words whose first tokens coincide (a classifier score
stuck at 0.5), an ``<image>`` count that disagrees with SigLIP (a forward that fails at the first
study), a prompt the processor lays out differently from the member's encoder (scores from a
layout the model was not trained on), or weights of another size than the config. Each check
below says which of these it rules out; :func:`check_paligemma` runs them all, and the loader
(:func:`ensembles.members.paligemma_common.load_paligemma`) refuses a checkpoint that fails one.

Checks (names as printed by ``screen models check``):

- ``member.json``: the spec reads, its kind is a PaliGemma kind, it has a prompt.
- ``files``: ``config.json`` and safetensors weights (never pickles); an adapter's base.
- ``config``: a PaliGemma config; ``image_size`` agrees with ``member.json``.
- ``tokenizer``: the saved tokenizer loads on its own and has ``<bos>``, ``<eos>``, ``<pad>``.
- ``loc-tokens``: ``<loc0000>``..``<loc1023>`` are single tokens *of the saved tokenizer*
  (not added at load), at contiguous ascending ids.
- ``image-token``: ``<image>`` is one token whose id is the config's ``image_token_id``, and the
  processor's image token count is the model's (patches, or the task head's queries).
- ``vocab``: every token id the processor can produce has an embedding row.
- ``answers``: classifier answers start with different tokens, none a loc/image/EOS token;
  detector: labels and ``Normal`` build the decoding grammar.
- ``prompt``: the checkpoint's prompt, with an answer, round-trips through the processor to the
  ids, token types and labels the member's encoder builds.
- ``preprocessing``: the processor's image size, mean and std are ``member.json``'s.
- ``weights``: every tensor's shape matches the model the config describes; nothing missing or
  unexpected (a task head may be absent: the loader initialises it).
- ``adapter`` (LoRA folders only): ``adapter_config.json`` is LoRA, its weights are safetensors
  and name modules the base has.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ensembles.checkpoint import MemberSpec
from ensembles.errors import CheckpointError, EnsembleError
from ensembles.loc_tokens import LOC_TOKENS, NORMAL_TEXT, format_detections
from ensembles.member_check.files import check_weight_files, safetensors_files, tensor_headers
from ensembles.member_check.report import CheckReport
from ensembles.member_check.weights import weight_fit
from ensembles.members.paligemma_inputs import (
    ADAPTER_CONFIG,
    PROCESSOR_FILES,
    encode_prompts,
)
from ensembles.task_head import (
    PROJECTOR_PREFIX,
    TaskHeadPaliGemmaForConditionalGeneration,
    TaskHeadSettings,
    image_token_count,
)
from ensembles.types import Box, Detection, MemberKind

KINDS: tuple[str, ...] = (MemberKind.PALIGEMMA_CLASSIFIER, MemberKind.PALIGEMMA_DETECTOR)


def check_paligemma(directory: str | Path, spec: MemberSpec) -> CheckReport:
    """Run every check on a PaliGemma member checkpoint (plain or LoRA adapter) whose
    ``member.json`` is ``spec`` (:func:`ensembles.member_check.check_member` reads it).

    Never raises for a bad checkpoint: each problem is a failed check in the report (call
    :meth:`CheckReport.raise_for_problems` to refuse it).
    """
    folder = Path(directory)
    report = CheckReport(folder, spec.kind)
    if not report.expect("member.json", spec.kind in KINDS and bool(spec.prompt),
                         f"{spec.kind}, prompt {spec.prompt!r}, intended use {spec.intended_use}",
                         f"kind {spec.kind!r} with prompt {spec.prompt!r}: a PaliGemma member "
                         f"needs kind {' or '.join(KINDS)} and a prompt"):
        return report
    weights_dir = _files(report, folder, spec)
    if weights_dir is None:
        return report
    config = _config(report, weights_dir, spec)
    if config is None:
        return report
    processor_dir = folder if _has_processor(folder) else weights_dir
    tokenizer = _tokenizer(report, processor_dir)
    processor = _processor(report, processor_dir)
    if tokenizer is not None and processor is not None:
        loc_ids = _loc_tokens(report, tokenizer)
        _image_token(report, processor, config)
        _vocab(report, processor, config)
        if loc_ids is not None:
            _answers(report, processor, spec, loc_ids)
            _prompt(report, processor, spec, config)
        _preprocessing(report, processor, spec, config)
    model = _meta_model(config)
    _weights(report, weights_dir, model)
    if weights_dir != folder:
        _adapter(report, folder, model)
    return report


def _has_processor(directory: Path) -> bool:
    return (directory / PROCESSOR_FILES[0]).is_file() and any(
        (directory / name).is_file() for name in PROCESSOR_FILES[1:]
    )


def _files(report: CheckReport, folder: Path, spec: MemberSpec) -> Path | None:
    """The folder holding the model weights (the base for an adapter), or ``None``."""
    weights_dir = folder
    if (folder / ADAPTER_CONFIG).is_file():
        base = spec.options.get("base")
        if not isinstance(base, str) or not base:
            report.failed("files", f"{ADAPTER_CONFIG} makes this a LoRA adapter, but member.json "
                                   "has no options.base naming the base checkpoint folder")
            return None
        weights_dir = Path(base) if Path(base).is_absolute() else (folder / base).resolve()
    return weights_dir if check_weight_files(report, weights_dir) is not None else None


def _config(report: CheckReport, weights_dir: Path, spec: MemberSpec) -> Any:
    from transformers import PaliGemmaConfig

    try:
        raw = json.loads((weights_dir / "config.json").read_text(encoding="utf-8"))
        if raw.get("model_type") != "paligemma":
            report.failed("config", f"config.json model_type is {raw.get('model_type')!r}, not "
                                    "'paligemma'")
            return None
        config: Any = PaliGemmaConfig.from_pretrained(weights_dir, local_files_only=True)
        requested = TaskHeadSettings.parse(spec.options.get("task_head"))
        if requested is not None and getattr(config, "task_head", None) is None:
            config.task_head = requested.to_dict()
    except (OSError, ValueError, EnsembleError) as exc:
        report.failed("config", f"config.json does not read as a PaliGemma config: {exc}")
        return None
    size = int(config.vision_config.image_size)
    text_type = getattr(config.text_config, "model_type", "?")
    report.expect("config", size == spec.image_size,
                  f"PaliGemma with a {text_type} text model, {size} px",
                  f"member.json image_size {spec.image_size} but the model's SigLIP takes {size} px")
    return config


def _tokenizer(report: CheckReport, processor_dir: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(processor_dir, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        report.failed("tokenizer", f"the tokenizer in {str(processor_dir)!r} does not load: {exc}")
        return None
    missing = [name for name in ("bos_token_id", "eos_token_id", "pad_token_id")
               if getattr(tokenizer, name, None) is None]
    report.expect("tokenizer", not missing, f"{len(tokenizer)} tokens",
                  f"the tokenizer has no {', '.join(m.removesuffix('_id') for m in missing)}; "
                  "prompts need <bos>, answers <eos>, batches <pad>")
    return tokenizer if not missing else None


def _processor(report: CheckReport, processor_dir: Path) -> Any:
    from transformers import PaliGemmaProcessor

    try:
        return PaliGemmaProcessor.from_pretrained(processor_dir, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        report.failed("tokenizer", f"PaliGemmaProcessor does not load from "
                                   f"{str(processor_dir)!r}: {exc}")
        return None


def _single_id(tokenizer: Any, token: str) -> int | None:
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == getattr(tokenizer, "unk_token_id", None):
        return None
    return int(ids[0])


def _loc_tokens(report: CheckReport, tokenizer: Any) -> list[int] | None:
    """The 1024 loc ids of the *saved* tokenizer, when they are single and contiguous."""
    ids = [_single_id(tokenizer, token) for token in LOC_TOKENS]
    absent = [LOC_TOKENS[i] for i, value in enumerate(ids) if value is None]
    if absent:
        report.failed("loc-tokens", f"the saved tokenizer lacks {len(absent)} of the 1024 loc "
                                    f"tokens as single tokens (e.g. {absent[0]}); the processor "
                                    "would add them as new ids the model never learned, so boxes "
                                    "would be noise: use the tokenizer the model was trained with")
        return None
    found = [int(v) for v in ids if v is not None]
    first = found[0]
    gaps = [i for i, value in enumerate(found) if value != first + i]
    if gaps:
        i = gaps[0]
        report.failed("loc-tokens", f"loc token ids are not contiguous: {LOC_TOKENS[i]} is "
                                    f"{found[i]}, expected {first + i} after {LOC_TOKENS[0]} = "
                                    f"{first}")
        return None
    report.passed("loc-tokens", f"<loc0000>..<loc1023> = ids {first}..{first + 1023}")
    return found


def _image_token(report: CheckReport, processor: Any, config: Any) -> None:
    token_id = _single_id(processor.tokenizer, processor.image_token)
    expected_id = int(getattr(config, "image_token_id", getattr(config, "image_token_index", -1)))
    count = image_token_count(config)
    vision = config.vision_config
    patches = int((vision.image_size // vision.patch_size) ** 2)
    seq = int(getattr(processor, "image_seq_length", -1))
    if token_id != expected_id:
        report.failed("image-token", f"{processor.image_token} is id {token_id} in the tokenizer "
                                     f"but the config's image_token_id is {expected_id}")
    elif seq not in (count, patches):
        report.failed("image-token", f"the processor puts {seq} image tokens in a prompt but the "
                                     f"model produces {count} image features; the processor "
                                     "belongs to another model or image size")
    else:
        report.passed("image-token", f"{processor.image_token} = id {token_id}, {count} per image")


def _vocab(report: CheckReport, processor: Any, config: Any) -> None:
    rows = int(config.text_config.vocab_size)
    highest = len(processor.tokenizer) - 1
    report.expect("vocab", highest < rows, f"{highest + 1} token ids, {rows} embedding rows",
                  f"the processor's tokenizer yields ids up to {highest} but the model has "
                  f"{rows} embedding rows")


def _first_id(tokenizer: Any, text: str) -> int | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return int(ids[0]) if ids else None


def _answers(report: CheckReport, processor: Any, spec: MemberSpec, loc_ids: list[int]) -> None:
    tokenizer = processor.tokenizer
    reserved = set(loc_ids) | {int(tokenizer.eos_token_id),
                               int(tokenizer.convert_tokens_to_ids(processor.image_token))}
    if spec.kind == MemberKind.PALIGEMMA_CLASSIFIER:
        if len(spec.labels) != 2:
            report.failed("answers", f"a classifier needs two answers [positive, negative], "
                                     f"member.json has {list(spec.labels)}")
            return
        firsts = [_first_id(tokenizer, label) for label in spec.labels]
        if None in firsts or firsts[0] == firsts[1] or reserved & {f for f in firsts if f is not None}:
            report.failed("answers", f"answers {list(spec.labels)} start with tokens {firsts}: "
                                     "they must start with different ordinary tokens (the score "
                                     "compares the two first tokens)")
            return
        report.passed("answers", f"{spec.labels[0]!r} = {firsts[0]}, {spec.labels[1]!r} = {firsts[1]}")
        return
    from ensembles.grammar import DetectionGrammar

    try:
        DetectionGrammar(tokenizer, spec.labels, max_boxes=1)
    except (EnsembleError, ValueError) as exc:
        report.failed("answers", f"labels {list(spec.labels)} and {NORMAL_TEXT!r} do not make a "
                                 f"decoding grammar: {exc}")
        return
    report.passed("answers", f"labels {list(spec.labels)} and {NORMAL_TEXT!r} decode unambiguously")


def _prompt(report: CheckReport, processor: Any, spec: MemberSpec, config: Any) -> None:
    prompt = str(spec.prompt)
    if "\n" in prompt or "<" in prompt:
        report.failed("prompt", f"prompt {prompt!r} holds a newline or a <token>; the prompt ends "
                                "at the newline the layout adds")
        return
    if spec.kind == MemberKind.PALIGEMMA_CLASSIFIER:
        answer = spec.labels[0]
    else:
        answer = format_detections([Detection(Box(0.1, 0.2, 0.3, 0.4), label=spec.labels[0])])
    size = int(config.vision_config.image_size)
    count = image_token_count(config)
    saved_count = processor.image_seq_length
    processor.image_seq_length = count  # what the member uses (see sync_processor_image_tokens)
    try:
        out = processor(images=[np.zeros((size, size, 3), dtype=np.uint8)],
                        text=[processor.image_token + prompt], suffix=[answer], return_tensors="pt")
    except Exception as exc:  # noqa: BLE001 - any processor failure is the finding
        report.failed("prompt", f"the processor cannot lay out {prompt!r}: {exc}")
        return
    finally:
        processor.image_seq_length = saved_count
    ours = encode_prompts(processor.tokenizer, [prompt], count, image_token=processor.image_token,
                          suffixes=[answer])
    different = [name for name in ("input_ids", "token_type_ids", "labels")
                 if name not in out or not torch.equal(out[name].long(), ours[name])]
    report.expect("prompt", not different,
                  f"{prompt!r} + {answer!r}: {ours['input_ids'].shape[1]} tokens, same as the processor",
                  f"the processor lays out {prompt!r} + {answer!r} differently from the member's "
                  f"encoder ({', '.join(different)} differ): the tokenizer or processor is not "
                  "PaliGemma's layout <image>xN <bos> prompt \\n answer <eos>")


def _preprocessing(report: CheckReport, processor: Any, spec: MemberSpec, config: Any) -> None:
    image_processor = processor.image_processor
    size = getattr(image_processor, "size", {}) or {}
    side = size.get("height", size.get("shortest_edge")) if isinstance(size, dict) else None
    mean = tuple(float(v) for v in getattr(image_processor, "image_mean", spec.mean))
    std = tuple(float(v) for v in getattr(image_processor, "image_std", spec.std))
    problems = []
    if side is not None and int(side) != int(config.vision_config.image_size):
        problems.append(f"the image processor resizes to {side} px, SigLIP takes "
                        f"{config.vision_config.image_size}")
    if not np.allclose(mean, spec.mean, atol=1e-6) or not np.allclose(std, spec.std, atol=1e-6):
        problems.append(f"the processor normalises with mean {mean} std {std}, member.json with "
                        f"mean {spec.mean} std {spec.std}")
    report.expect("preprocessing", not problems, f"{spec.image_size} px {spec.resize}, mean "
                  f"{spec.mean}, std {spec.std}", "; ".join(problems))


def _meta_model(config: Any) -> Any:
    with torch.device("meta"):
        return TaskHeadPaliGemmaForConditionalGeneration(config)


def _weights(report: CheckReport, weights_dir: Path, model: Any) -> None:
    try:
        headers = tensor_headers(safetensors_files(weights_dir))
    except CheckpointError as exc:
        report.failed("weights", str(exc))
        return
    head = model.task_head
    optional: tuple[str, ...] = ()
    if head is not None:
        head_keys = tuple(PROJECTOR_PREFIX + name for name, _ in head.head_parameters())
        absent = [key for key in head_keys if key not in headers]
        if len(absent) == len(head_keys):
            optional = head_keys  # a head the checkpoint lacks is initialised by the loader
        elif absent:
            report.failed("weights", f"the checkpoint holds only part of the task head (missing "
                                     f"{', '.join(absent)}); re-save it with save_pretrained")
            return
    fit = weight_fit(model, headers, optional)
    if fit.skipped:
        report.skipped("weights", fit.skipped)
        return
    dtypes = sorted({info.dtype for info in headers.values()})
    fresh = " (the task head is not in the weights: the loader initialises it)" if optional else ""
    report.expect("weights", fit.ok,
                  f"{len(headers)} tensors fit the config ({'/'.join(dtypes)}){fresh}",
                  f"weights do not fit the config: {fit.describe()}")


def _adapter(report: CheckReport, folder: Path, model: Any) -> None:
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        peft_type = str(config.get("peft_type", "")).upper()
    except (OSError, ValueError, AttributeError) as exc:
        report.failed("adapter", f"{ADAPTER_CONFIG} does not read: {exc}")
        return
    if peft_type != "LORA":
        report.failed("adapter", f"{ADAPTER_CONFIG} peft_type is {peft_type!r}; only LoRA "
                                 "adapters are supported")
        return
    files = safetensors_files(folder, stem="adapter_model")
    if not files:
        report.failed("adapter", "no adapter_model.safetensors (a pickled adapter_model.bin is "
                                 "never loaded); re-save with save_pretrained")
        return
    modules = {name for name, _ in model.named_modules()}
    targets = set()
    for key in tensor_headers(files):
        if ".lora_A" in key:
            targets.add(key.split(".lora_A")[0].removeprefix("base_model.model."))
    strangers = sorted(targets - modules)
    report.expect("adapter", bool(targets) and not strangers,
                  f"LoRA on {len(targets)} modules of the base",
                  f"the adapter targets modules the base lacks: {', '.join(strangers[:3]) or 'none'}")
