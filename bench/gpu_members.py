"""Real-size members with random weights on one GPU: images/s and peak memory per batch size.

Run from the repository root on a CUDA machine (never in CI; no test runs it)::

    HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 python -m bench.gpu_members --json gpu.json
    python -m bench.gpu_members --tiny          # the whole script on a CPU with tiny configs

What is built (random init directly on the GPU in bf16 under ``torch.device("cuda")``, so no
weights are read or downloaded):

- ``pg2-3b``: PaliGemma 2 3B at 224 px: SigLIP So400m/14 (hidden 1152, MLP 4304, 27 layers,
  16 heads, patch 14: 256 image tokens) + Gemma 2 2B (hidden 2304, MLP 9216, 26 layers, 8
  heads, 4 KV heads, head_dim 256, query_pre_attn_scalar 256, sliding window 4096, logit
  soft-caps 50/30), vocabulary 257,216 (the published PaliGemma 2 configs), bf16.
- ``pg2-10b-8bit``: the same SigLIP + Gemma 2 9B (hidden 3584, MLP 14336, 42 layers, 16 heads,
  8 KV heads, head_dim 256), language model in LLM.int8. How: built in bf16 on the GPU, then
  every ``nn.Linear`` outside :data:`ensembles.quant.SKIP_MODULES` (SigLIP, projector,
  ``lm_head``) is replaced by a ``bitsandbytes.nn.Linear8bitLt`` (``has_fp16_weights=False``,
  ``threshold=6.0``, the ``BitsAndBytesConfig(load_in_8bit=True)`` defaults) whose
  ``Int8Params`` hold ``bitsandbytes.functional.int8_vectorwise_quant`` of the bf16 weight
  computed on the GPU: the same modules and state a bitsandbytes 8-bit ``from_pretrained``
  produces, without a 20 GB round trip through the disk. Peak during the conversion is the
  bf16 model (about 21 GB).
- ``detr-r50``: ``DetrConfig()`` defaults (timm ResNet-50, 6+6 layers, d_model 256, 100
  queries), one class, pretrained backbone off, letterbox 800 px, bf16.
- ``together``: the three above on the card at once, as the screener holds them: the 10B
  detector (8-bit), the 3B classifier (bf16) and DETR built one after the other and kept.
  ``weights`` is the memory allocated with all three loaded (``build_peak_gib`` in the JSON:
  the peak while building them); the timed run sends the same images through the
  classifier, the detector and DETR in turn (ensemble images/s; peak = all three loaded plus
  the largest member's activations). Task ``score``: detector threshold 1, the first step
  only (a night of normal studies); ``decode``: threshold 0, every image decodes its boxes.

The architectures are defined in :mod:`bench.real_configs` (shared with
:mod:`bench.real_size`, which loads the same sizes from disk through the project's loader).

What is measured, through the project's own member classes (plain constructors with objects),
so the figures are those of the screener's code: ``score`` = ``PaliGemmaClassifier.predict``
(first-step logits); ``detect`` = ``PaliGemmaDetector.predict`` with threshold 0 (every image
decodes) and ``max_new_tokens`` = ``--new-tokens`` with the grammar forced into its box branch
(a random model may end early: the mean generated tokens is reported); ``generate`` =
``model.generate`` with exactly ``--new-tokens`` new tokens (``min_new_tokens`` =
``max_new_tokens``, greedy, no grammar) on the detector's own prompt encoding and pixels;
``detect`` for DETR = ``DetrMember.predict``. Per batch size: one warm-up batch, then one timed
``predict`` over ``max(4, 2 * batch)`` images; preprocessing on the CPU is included. Peak memory
is ``torch.cuda.max_memory_allocated`` during the timed run (weights included). Batch sizes
grow until out of memory, a run longer than ``--max-run-s``, or the ``--budget-s`` total
(default 360 s; with the builds and the run in flight it aims at about 8 minutes on an H100,
not yet measured there).

On a GPU machine without ``bitsandbytes`` installed (``pip install bitsandbytes``, or a wheel
copied there when it has no network), the 10B row is skipped with that reason.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.real_configs import (  # noqa: E402 - after the path set-up above
    PALIGEMMA_SIZES,
    TINY_SIZES,
    PaliGemmaSize,
    generate_fixed,
    paligemma_config,
    quantizable_linears,
)

NO_CUDA_MESSAGE = (
    "bench/gpu_members.py needs a CUDA GPU, and torch.cuda.is_available() is False here; run it "
    "on a GPU machine, or pass --tiny for a CPU sanity run with tiny configs"
)


MODELS = ("pg2-3b", "pg2-10b-8bit", "detr-r50", "together")


@dataclass
class Row:
    """One timed run."""

    model: str
    task: str
    batch: int
    images: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0
    peak_gib: float = 0.0
    weights_gib: float = 0.0
    status: str = "ok"  # ok | oom | skipped: ... | error: ...
    extra: dict[str, Any] = field(default_factory=dict)


def quantize_language_model_8bit(model: Any, skip: Sequence[str], threshold: float = 6.0) -> int:
    """Replace the model's ``nn.Linear`` layers outside ``skip`` by bitsandbytes int8 layers.

    Returns:
        How many layers were replaced.
    """
    import bitsandbytes as bnb
    import torch
    from bitsandbytes.functional import int8_vectorwise_quant

    targets = quantizable_linears(model, skip)
    for name in targets:
        linear = model.get_submodule(name)
        with torch.no_grad():
            cb, scb, _ = int8_vectorwise_quant(linear.weight.data.to(torch.float16))
        layer = bnb.nn.Linear8bitLt(
            linear.in_features, linear.out_features, bias=linear.bias is not None,
            has_fp16_weights=False, threshold=threshold, device="meta",
        )
        layer.weight = bnb.nn.Int8Params(
            cb, requires_grad=False, has_fp16_weights=False, CB=cb, SCB=scb
        )
        if linear.bias is not None:
            layer.bias = torch.nn.Parameter(linear.bias.data, requires_grad=False)
        model.set_submodule(name, layer)
        del linear
    return len(targets)


def build_paligemma(
    size: PaliGemmaSize, device: Any, dtype: Any
) -> tuple[Any, Any, dict[str, Any]]:
    """Random-init PaliGemma of ``size`` on ``device`` (quantised when the size says so)."""
    import torch

    from ensembles.quant import SKIP_MODULES, bitsandbytes_problem
    from ensembles.task_head import TaskHeadPaliGemmaForConditionalGeneration
    from ensembles.demo_arch.paligemma import build_tiny_processor

    if size.quantization == "8bit":
        problem = bitsandbytes_problem(device)
        if problem is not None:
            raise RuntimeError(f"skipped: {problem}")
    processor = build_tiny_processor(size.image_size, size.image_tokens)
    config = paligemma_config(size, processor)
    start = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        model = TaskHeadPaliGemmaForConditionalGeneration._from_config(config, dtype=dtype)
    model.eval()
    tokenizer = processor.tokenizer
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    info: dict[str, Any] = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
    }
    if size.quantization == "8bit":
        info["int8_layers"] = quantize_language_model_8bit(model, SKIP_MODULES)
    _empty_cache(device)
    info["build_s"] = round(time.perf_counter() - start, 1)
    return model, processor, info


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _empty_cache(device: Any) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _allocated_gib(device: Any) -> float:
    import torch

    return torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


def measure(
    model_name: str, task: str, batch: int, run: Callable[[list[Any]], Any],
    images: Sequence[Any], device: Any,
) -> Row:
    """Warm up on one batch, then time ``run`` over ``max(4, 2 * batch)`` images."""
    import torch

    count = max(4, 2 * batch)
    pictures = [images[i % len(images)] for i in range(count)]
    row = Row(model_name, task, batch, images=count, weights_gib=_allocated_gib(device))
    try:
        run(pictures[:batch])
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        result = run(pictures)
        _sync(device)
        row.seconds = time.perf_counter() - start
    except torch.OutOfMemoryError:
        row.status = "oom"
        _empty_cache(device)
        return row
    row.images_per_s = count / row.seconds
    if device.type == "cuda":
        row.peak_gib = torch.cuda.max_memory_allocated(device) / 2**30
    tokens = [o.extras.get("generated_tokens") for o in result or [] if hasattr(o, "extras")]
    if tokens and all(t is not None for t in tokens):
        row.extra["mean_generated_tokens"] = sum(tokens) / len(tokens)
    return row


def sweep(
    model_name: str, task: str, make_run: Callable[[int], Callable[[list[Any]], Any]],
    images: Sequence[Any], device: Any, batches: Sequence[int], deadline: float, max_run_s: float,
) -> list[Row]:
    """Measure each batch size in turn until OOM, a slow run or the deadline."""
    rows = []
    for batch in batches:
        if time.perf_counter() > deadline:
            rows.append(Row(model_name, task, batch, status="skipped: time budget spent"))
            break
        row = measure(model_name, task, batch, make_run(batch), images, device)
        rows.append(row)
        print(_format_row(row), flush=True)
        if row.status != "ok" or row.seconds > max_run_s:
            break
    return rows


def try_build(size: PaliGemmaSize, device: Any, dtype: Any) -> tuple[Any, Any, dict[str, Any]] | Row:
    """:func:`build_paligemma`, or the row that says why it could not be built (OOM, skipped)."""
    import torch

    try:
        built = build_paligemma(size, device, dtype)
    except torch.OutOfMemoryError:
        _empty_cache(device)
        return Row(size.name, "all", 0, status="oom while building")
    except RuntimeError as exc:
        if not str(exc).startswith("skipped:"):
            raise
        return Row(size.name, "all", 0, status=str(exc))
    print(f"# built {size.name}: {json.dumps(built[2])}", flush=True)
    return built


def paligemma_rows(
    size: PaliGemmaSize, images: Sequence[Any], device: Any, dtype: Any, args: argparse.Namespace,
    deadline: float,
) -> list[Row]:
    """Score, detect and fixed-length generation sweeps of one PaliGemma size."""
    from ensembles.members.paligemma_classifier import PaliGemmaClassifier
    from ensembles.members.paligemma_detector import PaliGemmaDetector
    from ensembles.demo_arch.paligemma import default_spec

    built = try_build(size, device, dtype)
    if isinstance(built, Row):
        return [built]
    model, processor, info = built
    cls_spec = default_spec("paligemma-classifier", image_size=size.image_size, name=size.name)
    det_spec = default_spec("paligemma-detector", image_size=size.image_size, name=size.name)
    new = args.new_tokens

    def score(batch: int) -> Callable[[list[Any]], Any]:
        return PaliGemmaClassifier(model, processor, cls_spec, batch_size=batch).predict

    def detector(batch: int) -> PaliGemmaDetector:
        return PaliGemmaDetector(
            model, processor, det_spec, batch_size=batch, threshold=0.0,
            max_new_tokens=new, max_boxes=new,
        )

    def generate(batch: int) -> Callable[[list[Any]], Any]:
        member = detector(batch)

        def run(pictures: list[Any]) -> None:
            for start in range(0, len(pictures), batch):
                generate_fixed(member, pictures[start : start + batch], new)

        return run

    rows: list[Row] = []
    for task, make in (("score", score), ("detect", lambda b: detector(b).predict),
                       ("generate", generate)):
        task_rows = sweep(size.name, task, make, images, device, args.batches, deadline,
                          args.max_run_s)
        for row in task_rows:
            row.extra.update(info)
        rows.extend(task_rows)
    del model
    _empty_cache(device)
    return rows


def build_detr_member(device: Any, args: argparse.Namespace) -> Any:
    """A DETR-ResNet-50 member (the tiny DETR with ``--tiny``) on ``device``, random weights."""
    from ensembles.checkpoint import MemberSpec
    from ensembles.members.detr import DetrMember
    from ensembles.demo_arch.detr import build_tiny_detr
    from ensembles.detr_arch import DetrArchitecture, build_detr
    from ensembles.preprocess import IMAGENET_MEAN, IMAGENET_STD

    model = build_tiny_detr() if args.tiny else build_detr(DetrArchitecture(backbone="resnet50")).eval()
    name = "tiny-detr" if args.tiny else "detr-r50"
    size = 128 if args.tiny else args.detr_image_size
    spec = MemberSpec(kind="detr", name=name, image_size=size, resize="letterbox",
                      mean=IMAGENET_MEAN, std=IMAGENET_STD)
    dtype = None if device.type == "cuda" else "float32"
    return DetrMember(model, spec, device=str(device), dtype=dtype)


def detr_rows(
    images: Sequence[Any], device: Any, args: argparse.Namespace, deadline: float
) -> list[Row]:
    """Detection sweep of DETR-ResNet-50 (or the tiny DETR with ``--tiny``)."""
    from ensembles.members.detr import DetrMember

    member = build_detr_member(device, args)
    model, spec, dtype, name = member.model, member.spec, member.dtype, member.spec.name
    info = {"parameters": sum(p.numel() for p in model.parameters()),
            "image_size": spec.image_size}

    def make(batch: int) -> Callable[[list[Any]], Any]:
        return DetrMember(model, spec, device=str(device), dtype=dtype, batch_size=batch).predict

    rows = sweep(name, "detect", make, images, device, args.batches, deadline, args.max_run_s)
    for row in rows:
        row.extra.update(info)
    del model
    _empty_cache(device)
    return rows


def together_rows(
    images: Sequence[Any], device: Any, dtype: Any, args: argparse.Namespace, deadline: float,
    sizes: dict[str, PaliGemmaSize],
) -> list[Row]:
    """All three members on one device at once: memory with all loaded, ensemble images/s.

    Builds the 10B detector first (its bf16 build is the highest transient peak), then the 3B
    classifier and DETR, and keeps all three. Each timed run sends the same images through
    the classifier, the detector and DETR in turn, as the screener does per batch. Task
    ``score``: detector threshold 1 (the first step only, a night of normal studies);
    ``decode``: threshold 0 (every image also decodes its boxes, the worst case).
    """
    from ensembles.members.detr import DetrMember
    from ensembles.members.paligemma_classifier import PaliGemmaClassifier
    from ensembles.members.paligemma_detector import PaliGemmaDetector
    from ensembles.demo_arch.paligemma import default_spec

    start = time.perf_counter()
    detector_built = try_build(sizes["pg2-10b-8bit"], device, dtype)
    if isinstance(detector_built, Row):
        return [Row("together", "all", 0, status=f"{detector_built.model}: {detector_built.status}")]
    classifier_built = try_build(sizes["pg2-3b"], device, dtype)
    if isinstance(classifier_built, Row):
        return [Row("together", "all", 0,
                    status=f"{classifier_built.model}: {classifier_built.status}")]
    detr = build_detr_member(device, args)
    det_model, det_processor, det_info = detector_built
    cls_model, cls_processor, _ = classifier_built
    info: dict[str, Any] = {
        "build_s": round(time.perf_counter() - start, 1), "loaded_gib": _allocated_gib(device),
        "members": [sizes["pg2-3b"].name, sizes["pg2-10b-8bit"].name, detr.spec.name],
    }
    if device.type == "cuda":
        import torch

        info["build_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"# together: {json.dumps(info)}", flush=True)
    image_size = sizes["pg2-3b"].image_size
    cls_spec = default_spec("paligemma-classifier", image_size=image_size)
    det_spec = default_spec("paligemma-detector", image_size=image_size)

    def ensemble(threshold: float) -> Callable[[int], Callable[[list[Any]], Any]]:
        def for_batch(batch: int) -> Callable[[list[Any]], Any]:
            classifier = PaliGemmaClassifier(cls_model, cls_processor, cls_spec, batch_size=batch)
            detector = PaliGemmaDetector(
                det_model, det_processor, det_spec, batch_size=batch, threshold=threshold,
                max_new_tokens=args.new_tokens, max_boxes=args.new_tokens,
            )
            boxes = DetrMember(detr.model, detr.spec, device=str(device), dtype=detr.dtype,
                               batch_size=batch)

            def run(pictures: list[Any]) -> Any:
                classifier.predict(pictures)
                found = detector.predict(pictures)
                boxes.predict(pictures)
                return found  # the detector's outputs carry the generated token counts

            return run

        return for_batch

    rows: list[Row] = []
    for task, threshold in (("score", 1.0), ("decode", 0.0)):
        task_rows = sweep("together", task, ensemble(threshold), images, device, args.batches,
                          deadline, args.max_run_s)
        for row in task_rows:
            row.extra.update(info, detector_int8_layers=det_info.get("int8_layers"))
        rows.extend(task_rows)
    del det_model, cls_model, detr, detector_built, classifier_built
    _empty_cache(device)
    return rows


def _format_row(row: Row) -> str:
    if row.status != "ok":
        return f"{row.model:<16}{row.task:<10}{row.batch:>6}  {row.status}"
    return (
        f"{row.model:<16}{row.task:<10}{row.batch:>6}{row.images_per_s:>10.2f}"
        f"{row.peak_gib:>10.2f}{row.weights_gib:>10.2f}"
        + (f"  tokens {row.extra['mean_generated_tokens']:.1f}"
           if "mean_generated_tokens" in row.extra else "")
    )


def summary(rows: Sequence[Row]) -> str:
    """Batch 1 and the best batch per (model, task)."""
    lines = [f"{'model':<16}{'task':<10}{'b1 img/s':>10}{'best b':>8}{'img/s':>10}"
             f"{'peak GiB':>10}{'weights':>10}"]
    keys = list(dict.fromkeys((r.model, r.task) for r in rows))
    for model, task in keys:
        ok = [r for r in rows if (r.model, r.task) == (model, task) and r.status == "ok"]
        if not ok:
            status = next(r.status for r in rows if (r.model, r.task) == (model, task))
            lines.append(f"{model:<16}{task:<10}  {status}")
            continue
        one = next((r.images_per_s for r in ok if r.batch == 1), float("nan"))
        best = max(ok, key=lambda r: r.images_per_s)
        lines.append(f"{model:<16}{task:<10}{one:>10.2f}{best.batch:>8}{best.images_per_s:>10.2f}"
                     f"{best.peak_gib:>10.2f}{best.weights_gib:>10.2f}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu_members",
        description="Images/s and peak GPU memory of the real-size members with random "
        "weights (PaliGemma 2 3B bf16, 10B 8-bit, DETR-ResNet-50). Needs CUDA unless --tiny.",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (sanity)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--batches", default=None,
                        help="comma-separated batch sizes (default 1,2,4,8,16,32; tiny 1,2,4)")
    parser.add_argument("--new-tokens", type=int, default=20, help="new tokens for generation")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no new build or run after this many seconds (default 360)")
    parser.add_argument("--max-run-s", type=float, default=30.0,
                        help="stop a sweep after a run longer than this")
    parser.add_argument("--detr-image-size", type=int, default=800, help="DETR letterbox side")
    parser.add_argument("--json", type=Path, default=None, help="write all rows here")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; valid: {', '.join(MODELS)}")
    default_batches = "1,2,4" if args.tiny else "1,2,4,8,16,32"
    args.batches = [int(b) for b in (args.batches or default_batches).split(",")]
    if args.budget_s is None:
        args.budget_s = 120.0 if args.tiny else 360.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 2 without CUDA (unless ``--tiny``)."""
    args = parse_args(argv)
    import torch

    if not args.tiny and not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE, file=sys.stderr)
        return 2
    from bench.members import synthetic_radiographs

    # LLM.int8 casts bf16/fp32 activations to fp16 on every call (as after an 8-bit
    # from_pretrained) and bitsandbytes logs that each time: expected, so silenced here.
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)

    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    deadline = time.perf_counter() + args.budget_s
    images = synthetic_radiographs(16)
    sizes = TINY_SIZES if args.tiny else PALIGEMMA_SIZES
    print(f"# device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)
    print(f"{'model':<16}{'task':<10}{'batch':>6}{'img/s':>10}{'peak GiB':>10}{'weights':>10}")
    rows: list[Row] = []
    for name in args.models:
        if time.perf_counter() > deadline:
            rows.append(Row(name, "all", 0, status="skipped: time budget spent"))
        elif name == "detr-r50":
            rows.extend(detr_rows(images, device, args, deadline))
        elif name == "together":
            rows.extend(together_rows(images, device, dtype, args, deadline, sizes))
        else:
            rows.extend(paligemma_rows(sizes[name], images, device, dtype, args, deadline))
    print("\n" + summary(rows))
    if args.json:
        payload = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "tiny": args.tiny, "new_tokens": args.new_tokens,
            "rows": [asdict(r) for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
