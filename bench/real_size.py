"""The real PaliGemma 2 sizes, loaded through the project's own loader: time and memory.

Run from the repository root (never in CI; the smoke test runs only ``--tiny``)::

    HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 python -m bench.real_size --json real_size.json
    python -m bench.real_size --tiny                 # the whole script with tiny configs
    python -m bench.real_size --only a,b --keep      # some scenarios; keep the checkpoints
    python -m bench.real_size --device cuda --json gpu.json   # the same on a GPU

On this project's CPU machine (2 cores, 24 GiB) the full run writes about 26 GB of
checkpoints under ``--workdir`` and takes on the order of an hour.

What is built: PaliGemma 2 3B-224 and 10B-224 (:mod:`bench.real_configs`: the published
SigLIP So400m/14 + Gemma 2 2B / 9B configurations, vocabulary 257,216) with the project's
256-query task head (``config.task_head``), random bf16 weights. The model skeleton is built on
the ``meta`` device (no memory); each tensor is then filled on its own (normal, std 0.02;
Gemma's RMSNorm weights 0 since it scales by ``1 + w``; LayerNorm weights 1; biases 0; the
head's queries N(0, 1) as the head initialises them) and written into safetensors shards of
at most 2 GB with ``model.safetensors.index.json``; ``lm_head`` is tied to the embeddings and
written once. The folder also gets ``config.json``, the project's offline processor
(``ensembles.demo_arch.paligemma.build_tiny_processor``: its ids all lie below 257,216) and ``member.json``.
Peak memory while building is about one shard, so the 10B (about 19 GB in bf16) is written on
a 24 GiB machine. A complete build (``build.json`` written last) is reused; the checkpoints
are deleted at the end unless ``--keep``.

Scenarios, each in its own subprocess so memory figures start clean and one that dies (out of
memory) is a row with its error, not the end of the bench:

- ``a`` / ``3b-bf16-score``: 3B classifier in bf16 scoring one image;
- ``b`` / ``3b-nf4-score``: 3B classifier, language model in nf4 (double quant), one image;
- ``c`` / ``10b-8bit-detect``: 10B detector in 8-bit, one image with threshold 0 (it always
  decodes, at most 4 boxes), then ``generate`` of exactly the tokens of a 4-box answer (a
  random model may stop earlier through the member);
- ``d`` / ``3b-qlora-step``: one QLoRA training step on the 3B nf4 base as ``screen train``
  builds it (``train.recipes.paligemma_model.build_model``: LoRA r16/alpha 32/dropout 0.05 on
  the language model's q/k/v/o, the projector with the head and the last 5 SigLIP layers
  trained in full), gradient checkpointing, batch 1, one detector-style answer, token loss,
  AdamW.

Loading is ``ensembles.members.paligemma_common.load_paligemma`` (``from_pretrained``, which
quantises tensor by tensor; SigLIP, projector/head and ``lm_head`` stay unquantised), wrapped
in the member classes the nightly job uses. Per scenario: load seconds, seconds for the first
and a second call on one image (or the first and second training step), and memory over the
process's baseline (RSS after imports, before loading): RSS added after loading, peak added
while loading and during each call (``VmHWM`` from ``/proc/self/status``, reset by writing 5
to ``/proc/self/clear_refs`` between phases; anonymous RSS sampled every 0.1 s beside it, since
``VmHWM`` also counts pages of the memory-mapped safetensors files). With ``--device cuda`` the
GPU figures are ``torch.cuda.max_memory_allocated`` per phase. Next to each: the README's GPU
weight estimate (``ensembles.quant.estimate_weight_gib``) and the weights as loaded
(``ensembles.quant.weight_bytes``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

if __package__ in (None, ""):  # loaded by path (the smoke tests): make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import real_configs  # noqa: E402 - after the path set-up above
from bench.real_configs import PaliGemmaSize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
SHARD_BYTES = 2 * 10**9
BUILD_MARKER = "build.json"
TASK_HEAD_QUERIES = 256
PHASE_PREFIX = "# phase "
MIN_SCENARIO_S = 30.0
"""Under ``--budget-s``, a scenario is not started with less time than this left."""
MAX_BOXES = 4
QLORA_SUFFIX = "<loc0256><loc0300><loc0768><loc0700> Fracture;"
"""A detector training answer: one box in PaliGemma's ``y0 x0 y1 x1`` loc order."""


@dataclass(frozen=True)
class Scenario:
    """One measured case: which checkpoint, how it is loaded, what is timed."""

    key: str
    name: str
    size: str  # "3b" | "10b"
    task: str  # "score" | "detect" | "qlora"
    quantization: str | None
    dtype: str  # load dtype ("bfloat16"; "float32" for the training step, as the recipe)


SCENARIOS: dict[str, Scenario] = {
    "a": Scenario("a", "3b-bf16-score", "3b", "score", None, "bfloat16"),
    "b": Scenario("b", "3b-nf4-score", "3b", "score", "4bit", "bfloat16"),
    "c": Scenario("c", "10b-8bit-detect", "10b", "detect", "8bit", "bfloat16"),
    "d": Scenario("d", "3b-qlora-step", "3b", "qlora", "4bit", "float32"),
}
KINDS = {"3b": "paligemma-classifier", "10b": "paligemma-detector"}


def sizes(tiny: bool) -> dict[str, PaliGemmaSize]:
    """The two architectures with the task head (tiny stand-ins with ``--tiny``)."""
    if tiny:
        small = replace(real_configs.TINY_QUANT_PG2, task_head=TASK_HEAD_QUERIES)
        return {"3b": replace(small, name="tiny-3b"),
                "10b": replace(small, name="tiny-10b", text_layers=3)}
    head = TASK_HEAD_QUERIES
    return {"3b": replace(real_configs.PG2_3B, name="pg2-3b-224-head", task_head=head),
            "10b": replace(real_configs.PG2_10B, name="pg2-10b-224-head", task_head=head)}


# --- memory ------------------------------------------------------------------------------


def proc_status() -> dict[str, int]:
    """``VmRSS``, ``VmHWM``, ``RssAnon``, ``RssFile`` of this process in bytes."""
    wanted = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
    out: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class AnonSampler:
    """Highest anonymous RSS seen by a background thread (every ``interval`` seconds).

    ``VmHWM`` counts file-backed pages too (safetensors are memory-mapped while loading), which
    the kernel can drop under pressure; the anonymous peak is what the process really holds.
    With ``limit`` (bytes) it is also a watchdog: past it, ``on_limit`` is called (the child
    records why and exits) before the machine runs out of memory for everyone on it.
    """

    def __init__(self, interval: float = 0.1, limit: int = 0,
                 on_limit: Callable[[int], None] | None = None) -> None:
        self.interval = interval
        self.peak = 0
        self.limit = limit
        self.on_limit = on_limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            anon = proc_status().get("RssAnon", 0)
            self.peak = max(self.peak, anon)
            if self.limit and anon > self.limit and self.on_limit is not None:
                self.on_limit(anon)

    def reset(self) -> None:
        """Start a new peak from now."""
        self.peak = proc_status().get("RssAnon", 0)

    def stop(self) -> None:
        """End the thread."""
        self._stop.set()


class MemoryMeter:
    """Seconds and memory of each phase against the baseline taken at construction."""

    def __init__(self, device: Any, limit: int = 0,
                 on_limit: Callable[[int], None] | None = None) -> None:
        self.device = device
        self.base = proc_status()
        self.sampler = AnonSampler(limit=limit, on_limit=on_limit)
        self.phases: dict[str, dict[str, float]] = {}
        self.current = ""
        self.clear_refs = reset_peak_rss()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block and record what it added to memory (nothing when it raises)."""
        import torch

        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.clear_refs = reset_peak_rss()
        self.sampler.reset()
        self.current = name
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        yield
        if cuda:
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        now, base = proc_status(), self.base
        sampled = max(self.sampler.peak, now.get("RssAnon", 0))
        record = {
            "seconds": seconds,
            "rss_added_gib": (now["VmRSS"] - base["VmRSS"]) / GIB,
            "peak_added_gib": (now["VmHWM"] - base["VmRSS"]) / GIB,
            "anon_added_gib": (now.get("RssAnon", 0) - base.get("RssAnon", 0)) / GIB,
            "anon_peak_added_gib": (sampled - base.get("RssAnon", 0)) / GIB,
            "file_rss_gib": now.get("RssFile", 0) / GIB,
            "loadavg_1m": float(Path("/proc/loadavg").read_text().split()[0]),
            # CPU seconds of all threads (below threads x seconds: the cores were shared or
            # idle), pages read back from storage, and what was read from the disk
            "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "major_faults": float(after.ru_majflt - before.ru_majflt),
            "disk_read_gib": (after.ru_inblock - before.ru_inblock) * 512 / GIB,
        }
        if cuda:
            record["gpu_allocated_gib"] = torch.cuda.memory_allocated(self.device) / GIB
            record["gpu_peak_gib"] = torch.cuda.max_memory_allocated(self.device) / GIB
            record["gpu_reserved_gib"] = torch.cuda.memory_reserved(self.device) / GIB
        self.phases[name] = record
        print(f"{PHASE_PREFIX}{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in record.items()),
              flush=True)


# --- building a checkpoint ---------------------------------------------------------------


def init_rule(model: Any, name: str) -> tuple[str, float]:
    """How a random checkpoint fills tensor ``name``: ``("normal", std)``, zeros or ones."""
    owner = type(model.get_submodule(name.rsplit(".", 1)[0])).__name__
    if name.endswith(".bias"):
        return "zeros", 0.0
    if owner == "LayerNorm":
        return "ones", 0.0
    if "RMSNorm" in owner:  # Gemma scales by (1 + weight): zero is the identity
        return "zeros", 0.0
    if name.endswith("multi_modal_projector.queries"):
        return "normal", 1.0  # TaskAttentionProjector.reset_task_head's N(0, 1)
    return "normal", 0.02


def shard_plan(
    tensors: Sequence[tuple[str, tuple[int, ...]]], max_bytes: int, element: int = 2
) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Group tensors in order into shards of at most ``max_bytes`` (a bigger one alone)."""
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    used = 0
    for name, shape in tensors:
        size = element
        for dim in shape:
            size *= dim
        if shards[-1] and used + size > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append((name, shape))
        used += size
    return shards


def skeleton(size: PaliGemmaSize) -> tuple[Any, Any]:
    """The model on the ``meta`` device (shapes, no memory) and the processor it goes with."""
    import torch

    from ensembles.task_head import TaskHeadPaliGemmaForConditionalGeneration
    from ensembles.demo_arch.paligemma import build_tiny_processor

    processor = build_tiny_processor(size.image_size, size.image_tokens)
    config = real_configs.paligemma_config(size, processor)
    with torch.device("meta"):
        model = TaskHeadPaliGemmaForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    return model, processor


def parameter_counts(model: Any) -> dict[str, int]:
    """Unique parameters (tied once) and those bitsandbytes would quantise."""
    params = dict(model.named_parameters())  # named_parameters lists a tied tensor once
    linears = real_configs.quantizable_linears(model)
    quantized = sum(params[f"{name}.weight"].numel() for name in linears)
    return {"total_params": sum(p.numel() for p in params.values()),
            "quantized_params": quantized}


def build_checkpoint(
    size: PaliGemmaSize, kind: str, directory: Path, device: Any
) -> dict[str, Any]:
    """Write a random-weight member checkpoint of ``size`` tensor by tensor (module docstring).

    Returns:
        What ``build.json`` holds: the size, shard files, bytes, parameter counts, seconds.
    """
    import torch
    from safetensors.torch import save_file

    from ensembles.checkpoint import write_member_spec
    from ensembles.demo_arch.paligemma import default_spec

    start = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / BUILD_MARKER).unlink(missing_ok=True)
    model, processor = skeleton(size)
    named = [(name, tuple(p.shape)) for name, p in model.named_parameters()]
    shards = shard_plan(named, SHARD_BYTES)
    weight_map: dict[str, str] = {}
    total = 0
    generator = torch.Generator(device=device)
    for index, shard in enumerate(shards):
        file = f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors: dict[str, Any] = {}
        for name, shape in shard:
            rule, std = init_rule(model, name)
            tensor = torch.empty(shape, dtype=torch.bfloat16, device=device)
            if rule == "normal":
                generator.manual_seed(len(weight_map))
                tensor.normal_(0.0, std, generator=generator)
            else:
                tensor.fill_(1.0 if rule == "ones" else 0.0)
            tensors[name] = tensor.cpu()
            weight_map[name] = file
            total += tensor.numel() * 2
        save_file(tensors, str(directory / file), metadata={"format": "pt"})
        del tensors
        print(f"# wrote {file} ({len(shard)} tensors)", flush=True)
    index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=2))
    model.config.save_pretrained(directory)
    processor.save_pretrained(directory)
    spec = default_spec(kind, image_size=size.image_size, name=size.name,
                        options={"task_head": {"num_queries": size.task_head}})
    write_member_spec(directory, spec)
    info = {"size": asdict(size), "kind": kind, "shards": sorted(set(weight_map.values())),
            "total_bytes": total, **parameter_counts(model),
            "build_s": round(time.perf_counter() - start, 1)}
    (directory / BUILD_MARKER).write_text(json.dumps(info, indent=2))
    return info


def existing_build(size: PaliGemmaSize, kind: str, directory: Path) -> dict[str, Any] | None:
    """The ``build.json`` of a complete earlier build of the same size, else ``None``."""
    marker = directory / BUILD_MARKER
    if not marker.is_file():
        return None
    info: dict[str, Any] = json.loads(marker.read_text())
    if info.get("size") != asdict(size) or info.get("kind") != kind:
        return None
    if not all((directory / name).is_file() for name in info.get("shards", [])):
        return None
    return info


# --- scenarios (run in a child process) --------------------------------------------------


def quantization_state(model: Any) -> dict[str, Any]:
    """What ``weight_bytes`` does not see, and how bitsandbytes holds the 4-bit layers now.

    ``weight_bytes`` counts parameters and buffers; the 4-bit ``quant_state`` (absmax scales,
    codebooks, the double-quant state) and the int8 row scales (``SCB``) are plain attributes.

    Returns:
        ``packed_4bit_layers``: Linear4bit layers repacked for the AVX-512-BF16 CPU kernel;
        ``scales_gib``: bytes of those scale tensors.
    """
    import torch

    packed, total, seen = 0, 0, set()
    for module in model.modules():
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        tensors = [getattr(weight, "SCB", None)]
        if state is not None:
            packed += bool(getattr(state, "packing_format_for_cpu", False))
            tensors += [state.absmax, state.code]
            if getattr(state, "nested", False) and state.state2 is not None:
                tensors += [state.state2.absmax, state.state2.code]
        for tensor in tensors:
            if torch.is_tensor(tensor) and id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return {"packed_4bit_layers": packed, "scales_gib": total / GIB}


def four_box_tokens(tokenizer: Any) -> int:
    """New tokens of a 4-box answer ``<loc>x4 Fracture; <loc>x4 Fracture; ...`` plus EOS."""
    box = "<loc0100><loc0200><loc0300><loc0400> Fracture;"
    answer = " ".join([box] * MAX_BOXES)
    return len(tokenizer.encode(answer, add_special_tokens=False)) + 1


def run_member(scenario: Scenario, checkpoint: Path, device: Any, meter: MemoryMeter,
               images: Sequence[Any]) -> dict[str, Any]:
    """Scenarios a-c: load through ``load_paligemma``, wrap in the member, call it twice."""
    from ensembles.checkpoint import read_member_spec
    from ensembles.members.paligemma_classifier import PaliGemmaClassifier
    from ensembles.members.paligemma_common import load_paligemma
    from ensembles.members.paligemma_detector import PaliGemmaDetector
    from ensembles.quant import quantized_module_names, weight_bytes

    spec = read_member_spec(checkpoint)
    with meter.phase("load"):
        loaded = load_paligemma(checkpoint, spec, device=str(device), dtype=scenario.dtype,
                                quantization=scenario.quantization)
    model = loaded.model
    extra: dict[str, Any] = {
        "weights_gib": weight_bytes(model) / GIB,
        "quantized_layers": len(quantized_module_names(model)),
        "scales_gib": quantization_state(model)["scales_gib"],
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
    }
    member: Any
    if scenario.task == "score":
        member = PaliGemmaClassifier(model, loaded.processor, spec, batch_size=1)
    else:
        member = PaliGemmaDetector(model, loaded.processor, spec, batch_size=1, threshold=0.0,
                                   max_boxes=MAX_BOXES)
        extra["max_new_tokens"] = member.max_new_tokens
    for call, image in (("first", images[0]), ("second", images[1])):
        with meter.phase(call):
            (output,) = member.predict([image])
        extra[f"{call}_score"] = output.score
        if scenario.task == "detect":
            extra[f"{call}_boxes"] = len(output.detections)
            extra[f"{call}_generated_tokens"] = output.extras.get("generated_tokens")
        if call == "first":
            state = quantization_state(model)
            extra["packed_4bit_layers_after_first"] = state["packed_4bit_layers"]
            extra["scales_gib_after_first"] = state["scales_gib"]
            extra["weights_gib_after_first"] = weight_bytes(model) / GIB
    if scenario.task == "detect":
        tokens = four_box_tokens(loaded.processor.tokenizer)
        extra["generate_tokens"] = tokens
        with meter.phase("generate"):
            real_configs.generate_fixed(member, [images[0]], tokens)
    return extra


def run_qlora(checkpoint: Path, device: Any, meter: MemoryMeter, images: Sequence[Any],
              workdir: Path) -> dict[str, Any]:
    """Scenario d: build the QLoRA model as ``screen train`` does, then two optimizer steps."""
    import torch

    from ensembles.members.paligemma_inputs import encode_prompts, position_ids_for
    from ensembles.preprocess import PreprocessConfig, preprocess_batch
    from ensembles.quant import weight_bytes
    from ensembles.demo_arch.paligemma import DETECTOR_LABELS, DETECTOR_PROMPT
    from train.train_config import OptimConfig, PaliGemmaSection
    from train.losses import token_cross_entropy
    from train.recipes.paligemma_model import build_model, core_model

    section = PaliGemmaSection(base=str(checkpoint), method="qlora", quantization="4bit")
    precision = "bf16-mixed" if device.type == "cuda" else "fp32"  # the engine's "auto"
    with meter.phase("load"):
        built = build_model("paligemma-detector", section, out=workdir / "qlora-run",
                            device=str(device), precision=precision, seed=0,
                            prompt=DETECTOR_PROMPT, labels=DETECTOR_LABELS, name="qlora-bench",
                            gradient_checkpointing=True)
    model, processor = built.model, built.processor
    trainable = [p for p in model.parameters() if p.requires_grad]
    optim = OptimConfig()
    optimizer = torch.optim.AdamW(trainable, lr=optim.lr, betas=optim.betas, eps=optim.eps,
                                  weight_decay=optim.weight_decay)
    vision_dtype = next(core_model(model).model.vision_tower.parameters()).dtype
    encoded = encode_prompts(processor.tokenizer, [DETECTOR_PROMPT], processor.image_seq_length,
                             image_token=processor.image_token, suffixes=[QLORA_SUFFIX])
    encoded = {k: v.to(device) for k, v in encoded.items()}
    keep = int((encoded["labels"] != -100).sum(dim=1).max()) + 1
    extra: dict[str, Any] = {
        "trainable_params": sum(p.numel() for p in trainable),
        "weights_gib": weight_bytes(model) / GIB, "precision": precision,
        "sequence_length": int(encoded["input_ids"].shape[1]), "answer_tokens": keep - 1,
    }
    model.train()
    autocast = precision == "bf16-mixed"
    for step, image in (("first", images[0]), ("second", images[1])):
        pixels = torch.from_numpy(preprocess_batch([image], PreprocessConfig.from_spec(built.spec)))
        with meter.phase(step):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                out = model(input_ids=encoded["input_ids"],
                            attention_mask=encoded["attention_mask"],
                            token_type_ids=encoded["token_type_ids"],
                            position_ids=position_ids_for(encoded["attention_mask"]),
                            pixel_values=pixels.to(device, dtype=vision_dtype), use_cache=False,
                            logits_to_keep=keep)
                loss = token_cross_entropy(out.logits, encoded["labels"][:, -keep:])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        extra[f"{step}_loss"] = float(loss.detach())
    extra["optimizer_state_gib"] = sum(
        t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
        if torch.is_tensor(t)
    ) / GIB
    return extra


def child_main(args: argparse.Namespace) -> int:
    """One scenario (or one build) in this process; writes its result to ``--result``."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"child": args.child, "status": "ok"}
    device = torch.device(args.device)
    try:
        if args.child.startswith("build:"):
            result.update(child_build(args.child.split(":", 1)[1].split(","), args, device))
        else:
            child_scenario(SCENARIOS[args.child], args, device, result)
    except Exception as exc:  # noqa: BLE001 - the row carries the error, the bench goes on
        import traceback

        traceback.print_exc()
        result.update(status="error", error=f"{type(exc).__name__}: {exc}"[:2000])
    Path(args.result).write_text(json.dumps(result, indent=2, default=str))
    return 0


def child_build(size_keys: Sequence[str], args: argparse.Namespace, device: Any) -> dict[str, Any]:
    """Build (or reuse) each size's checkpoint in turn; seconds and peak RSS of each.

    One child for all builds (imports once); a failed size is an error entry, not the end.
    """
    builds: dict[str, dict[str, Any]] = {}
    for key in size_keys:
        size, kind = sizes(args.tiny)[key], KINDS[key]
        directory = Path(args.workdir) / size.name
        reset_peak_rss()
        base, start = proc_status(), time.perf_counter()
        entry: dict[str, Any] = {"status": "ok", "directory": str(directory)}
        try:
            info = existing_build(size, kind, directory)
            entry["reused"] = info is not None
            entry["build"] = info or build_checkpoint(size, kind, directory, device)
        except Exception as exc:  # noqa: BLE001 - the scenarios of this size report it
            entry.update(status="error", error=f"{type(exc).__name__}: {exc}"[:2000])
        entry["seconds"] = time.perf_counter() - start
        entry["peak_added_gib"] = (proc_status()["VmHWM"] - base["VmRSS"]) / GIB
        builds[key] = entry
    return {"builds": builds}


def child_scenario(
    scenario: Scenario, args: argparse.Namespace, device: Any, result: dict[str, Any]
) -> None:
    """Import everything, take the baseline, run the scenario; fills ``result`` as it goes.

    Filled in place so that the phases measured before an error still reach the report.
    """
    import importlib

    import torch

    from bench.members import synthetic_radiographs
    from ensembles.members import paligemma_classifier, paligemma_detector  # noqa: F401
    from ensembles.quant import estimate_weight_gib, quiet_int8_cast_notice

    # what loading may import, imported before the baseline so every scenario's baseline holds
    # the same libraries; bitsandbytes may be missing where nothing is quantised
    for module in ("bitsandbytes", "peft", "train.recipes.paligemma_model"):
        try:
            importlib.import_module(module)
        except ImportError:
            if module != "bitsandbytes" or scenario.quantization:
                raise
    quiet_int8_cast_notice()
    size = sizes(args.tiny)[scenario.size]
    checkpoint = Path(args.workdir) / size.name
    build = existing_build(size, KINDS[scenario.size], checkpoint)
    if build is None:
        raise RuntimeError(f"no complete checkpoint in {checkpoint}; the build step failed")
    images = synthetic_radiographs(2)

    def stop(anon: int) -> None:
        """The watchdog: write why, then leave at once (the main thread may be in C code)."""
        result.update(status="error", phases=meter.phases, error=(
            f"anonymous RSS reached {anon / GIB:.1f} GiB (over the --max-rss-gib limit of "
            f"{args.max_rss_gib} GiB) during phase {meter.current!r}; stopped to protect the "
            "machine"))
        Path(args.result).write_text(json.dumps(result, indent=2, default=str))
        os._exit(3)

    meter = MemoryMeter(device, int(args.max_rss_gib * GIB) if device.type == "cpu" else 0, stop)
    result.update({
        "baseline_rss_gib": meter.base["VmRSS"] / GIB, "clear_refs": meter.clear_refs,
        "threads": torch.get_num_threads(),
        "gpu_estimate_gib": estimate_weight_gib(build["total_params"], build["quantized_params"],
                                                scenario.quantization),
        "total_params": build["total_params"], "quantized_params": build["quantized_params"],
    })
    try:
        if scenario.task == "qlora":
            result["extra"] = run_qlora(checkpoint, device, meter, images, Path(args.workdir))
        else:
            result["extra"] = run_member(scenario, checkpoint, device, meter, images)
    finally:
        meter.sampler.stop()
        result["phases"] = meter.phases
    result["cpu_4bit_kernel"] = _cpu_4bit_kernel()


def _cpu_4bit_kernel() -> str:
    """Which CPU 4-bit matmul bitsandbytes uses here (its ops module decides at import)."""
    try:
        from bitsandbytes.backends.cpu import ops
    except Exception as exc:  # noqa: BLE001
        return f"bitsandbytes CPU backend not importable: {exc}"
    if not hasattr(ops, "gemm_4bit_forward_kernel"):
        return "no AVX-512-BF16 path: nf4 dequantised to the compute dtype, then matmul"
    if ops.gemm_4bit_forward_kernel is None:
        return ("AVX-512-BF16 path with bitsandbytes' own gemv_4bit_inference_cpu_nf4_bf16 "
                "(the kernels-community gemm_4bit_forward kernel did not load)")
    return "AVX-512-BF16 path with the kernels-community gemm_4bit_forward kernel"


# --- the parent: builds, subprocesses, table ---------------------------------------------


@dataclass
class Row:
    """One scenario's outcome as the parent saw it."""

    key: str
    name: str
    status: str = "ok"
    wall_s: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)


def run_child(
    child: str, args: argparse.Namespace, timeout_s: float
) -> tuple[dict[str, Any], float]:
    """Run ``--child child`` in a subprocess, echoing its output; its result and wall seconds."""
    workdir = Path(args.workdir)
    result_file = workdir / f"result-{child.replace(':', '-')}.json"
    result_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "bench.real_size", "--child", child, "--workdir",
               str(workdir), "--result", str(result_file), "--device", args.device,
               "--threads", str(args.threads), "--max-rss-gib", str(args.max_rss_gib)]
    command += ["--tiny"] if args.tiny else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    tail: collections.deque[str] = collections.deque(maxlen=30)
    phase_lines: list[str] = []
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)

    def echo() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line.rstrip())
            if line.startswith(PHASE_PREFIX):
                phase_lines.append(line)
            print(f"[{child}] {line.rstrip()}", flush=True)

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    try:
        code = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        code = 124
    reader.join(timeout=10)
    wall = time.perf_counter() - start
    if result_file.is_file():
        return json.loads(result_file.read_text()), wall
    why = {124: f"timed out after {timeout_s:.0f} s",
           -9: "killed by SIGKILL (out of memory? see dmesg)"}.get(code, f"exit code {code}")
    last = " | ".join(line for line in list(tail)[-5:] if not line.startswith(PHASE_PREFIX))
    return {"status": "error", "error": f"{why}; last output: {last[-600:]}",
            "phases": phases_from_output(phase_lines)}, wall


def phases_from_output(lines: Sequence[str]) -> dict[str, dict[str, float]]:
    """The phases a child printed before it died without writing its result (OOM kill).

    Each line is ``# phase NAME: key value, key value, ...`` as :meth:`MemoryMeter.phase`
    prints it.
    """
    phases: dict[str, dict[str, float]] = {}
    for line in lines:
        head, _, body = line[len(PHASE_PREFIX):].partition(":")
        pairs = (item.strip().rsplit(" ", 1) for item in body.split(",") if item.strip())
        phases[head.strip()] = {key: float(value) for key, value in pairs}
    return phases


def machine_info(device: str) -> dict[str, Any]:
    """CPU, cores, RAM, library versions (and the GPU with ``--device cuda``)."""
    import torch
    import transformers

    try:
        import bitsandbytes

        bnb_version = str(bitsandbytes.__version__)
    except Exception as exc:  # noqa: BLE001 - the quantised scenarios then report why
        bnb_version = f"not importable ({type(exc).__name__})"

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                  if line.startswith("flags")), [])
    meminfo = Path("/proc/meminfo").read_text().split()
    info: dict[str, Any] = {
        "cpu": model, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gib": int(meminfo[meminfo.index("MemTotal:") + 1]) * 1024 / GIB,
        "cpu_flags": [f for f in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
                      if f in flags],
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "bitsandbytes": bnb_version,
        "device": device,
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_line(info: dict[str, Any], threads: int) -> str:
    """One line for the table's head."""
    line = (f"# machine: {info['cpu']}, {info['usable_cores']} cores, {info['ram_gib']:.1f} GiB "
            f"RAM, flags {' '.join(info['cpu_flags']) or '-'}; Python {info['python']}, torch "
            f"{info['torch']}, transformers {info['transformers']}, bitsandbytes "
            f"{info['bitsandbytes']}; torch threads {threads or 'default'}; "
            f"device {info['device']}")
    return line + (f" ({info['gpu']})" if "gpu" in info else "")


def _cell(value: Any, width: int, digits: int = 2) -> str:
    """A right-aligned number, or ``-`` where the phase did not run."""
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>{width}.{digits}f}"


def summary_table(rows: Sequence[Row], cuda: bool) -> str:
    """One line per scenario: seconds, memory over the baseline, weights, GPU estimate."""
    head = (f"{'scenario':<20}{'load s':>8}{'1st s':>9}{'2nd s':>9}{'RSS+load':>10}"
            f"{'peak+load':>11}{'peak+run':>10}{'anon+run':>10}{'weights':>9}{'GPU est':>9}"
            + (f"{'GPU load':>10}{'GPU run':>9}" if cuda else ""))
    lines = [head, "(seconds per image = per call: one image a call; memory in GiB added over the "
             "process's RSS after imports; run = the highest of the calls)"]
    for row in rows:
        result = row.result
        label = f"{row.key} {row.name}"
        if row.status != "ok":
            lines.append(f"{label:<20}  {row.status}: {result.get('error', '')}")
            continue
        phases = result.get("phases", {})
        load = phases.get("load", {})
        runs = [phases[p] for p in ("first", "second", "generate") if p in phases]
        run_peak = max((p["peak_added_gib"] for p in runs), default=None)
        anon_peak = max((p["anon_peak_added_gib"] for p in runs), default=None)
        line = (f"{label:<20}{_cell(load.get('seconds'), 8, 1)}"
                f"{_cell(phases.get('first', {}).get('seconds'), 9, 1)}"
                f"{_cell(phases.get('second', {}).get('seconds'), 9, 1)}"
                f"{_cell(load.get('rss_added_gib'), 10)}{_cell(load.get('peak_added_gib'), 11)}"
                f"{_cell(run_peak, 10)}{_cell(anon_peak, 10)}"
                f"{_cell(result.get('extra', {}).get('weights_gib'), 9)}"
                f"{_cell(result.get('gpu_estimate_gib'), 9)}")
        if cuda:
            gpu_run = max((p.get("gpu_peak_gib", 0.0) for p in runs), default=None)
            line += f"{_cell(load.get('gpu_peak_gib'), 10)}{_cell(gpu_run, 9)}"
        lines.append(line)
    return "\n".join(lines)


def details(rows: Sequence[Row]) -> list[str]:
    """Per scenario: each phase and what the scenario observed (boxes, tokens, losses...).

    A failed scenario lists the phases it finished before its error.
    """
    lines = []
    for row in rows:
        result = row.result
        if not result.get("phases"):
            continue
        lines.append(f"{row.key} {row.name}: {row.status}, wall {row.wall_s:.0f} s (imports and "
                     f"exit included), baseline RSS {result.get('baseline_rss_gib', 0):.2f} GiB, "
                     f"{result.get('threads')} threads")
        for name, phase in result.get("phases", {}).items():
            lines.append(f"    {name:<9}" + ", ".join(f"{k} {v:.2f}" for k, v in phase.items()))
        extra = {k: (round(v, 4) if isinstance(v, float) else v)
                 for k, v in result.get("extra", {}).items()}
        lines.append(f"    observed: {json.dumps(extra)}")
    return lines


def notes(rows: Sequence[Row], cuda: bool) -> list[str]:
    """What differs between these figures and the GPU ones, with what this run observed."""
    by_key = {row.key: row.result for row in rows if row.status == "ok"}
    kernel = next((r["cpu_4bit_kernel"] for r in by_key.values() if "cpu_4bit_kernel" in r),
                  None)
    out = [
        "RSS is the whole process (Python, the libraries' heaps, tensors, and file-backed pages "
        "of memory-mapped safetensors, shown as file_rss_gib); on a GPU the figures are "
        "torch.cuda.max_memory_allocated: tensors only, without the CUDA context (hundreds of "
        "MiB) or what the caching allocator reserves beyond them (gpu_reserved_gib).",
        "loadavg_1m (per phase) is the machine's 1-minute load: above the core count, other "
        "work shared the cores and the seconds are slower than on an idle machine; cpu_s "
        "well below threads x seconds says the same (or that the process waited for I/O); "
        "major_faults and disk_read_gib count pages read back from storage, e.g. memory-mapped "
        "weights the kernel dropped under memory pressure and the next call read again.",
        "GPU estimate = ensembles.quant.estimate_weight_gib (weights only, bf16 outside the "
        "quantised language model); 'weights' = ensembles.quant.weight_bytes of the loaded "
        "model, as loaded in this process.",
        "Compute dtypes (from the code paths): a: bf16 matmuls on both. b: on a CPU with "
        "AVX-512-BF16 bitsandbytes repacks each Linear4bit at its first inference call and runs "
        "a bf16 kernel; on a GPU nf4 is dequantised to bf16 per matmul. c: LLM.int8 casts "
        "activations to fp16 and multiplies int8 x int8 (torch._int_mm on an AVX-512 CPU, "
        "cuBLASLt on a GPU), outlier columns above 6.0 in fp16. d: the recipe loads the base in "
        "float32 (precision fp32 on a CPU, bf16-mixed autocast on a GPU); 4-bit weights are "
        "dequantised per matmul in training (no repacking while gradients flow).",
    ]
    if kernel and not cuda:
        out.append(f"CPU 4-bit kernel here: {kernel}.")
    mapped = []
    for key, result in by_key.items():
        phases = result.get("phases", {})
        if "load" in phases and "first" in phases:
            load, first = phases["load"], phases["first"]
            mapped.append(f"{key} anon +{load['anon_added_gib']:.2f} / file "
                          f"{load['file_rss_gib']:.2f} GiB after loading, anon "
                          f"+{first['anon_added_gib']:.2f} / file {first['file_rss_gib']:.2f} "
                          "GiB after the first call")
    if mapped and not cuda:
        out.append(
            "Where the weights live (observed): tensors loaded without conversion stay views of "
            "the memory-mapped safetensors (file-backed pages, read in when first touched and "
            "droppable under pressure), quantised or converted ones are anonymous memory: "
            + "; ".join(mapped) + ". So a bf16 'load' maps rather than reads, and its first "
            "call pays for reading the weights (from the page cache, or from the disk: "
            "disk_read_gib)."
        )
    b = by_key.get("b", {}).get("extra", {})
    if b and not cuda:
        out.append(
            f"b observed: {b.get('packed_4bit_layers_after_first')} of "
            f"{b.get('quantized_layers')} 4-bit layers repacked after the first call; weights "
            f"{b.get('weights_gib', 0):.2f} GiB after loading, "
            f"{b.get('weights_gib_after_first', 0):.2f} GiB after the first call; the 4-bit "
            f"scales (quant_state, not in weight_bytes) {b.get('scales_gib', 0):.3f} GiB after "
            f"loading, {b.get('scales_gib_after_first', 0):.3f} GiB after the first call "
            "(bitsandbytes' repack stores the absmax as float32, undoing the double "
            "quantisation)."
        )
    c = by_key.get("c", {}).get("extra", {})
    if c:
        out.append(
            f"c observed: the member decoded {c.get('first_boxes')} and {c.get('second_boxes')} "
            f"boxes in {c.get('first_generated_tokens')} and {c.get('second_generated_tokens')} "
            f"tokens (budget {c.get('max_new_tokens')}); 'generate' forced "
            f"{c.get('generate_tokens')} new tokens (a 4-box answer with EOS)."
        )
    return out


def print_report(rows: Sequence[Row], info: dict[str, Any], builds: dict[str, Any],
                 args: argparse.Namespace) -> None:
    """The machine line, the summary table, the details and the notes."""
    print()
    print(machine_line(info, args.threads))
    for key, build in builds.items():
        data = build.get("build", {})
        print(f"# build {key}: {build.get('status')}, reused {build.get('reused')}, "
              f"{data.get('total_bytes', 0) / 1e9:.2f} GB in {len(data.get('shards', []))} shards, "
              f"{data.get('total_params', 0) / 1e9:.3f}B parameters "
              f"({data.get('quantized_params', 0) / 1e9:.3f}B quantisable), "
              f"{build.get('seconds', 0):.0f} s, "
              f"peak RSS added {build.get('peak_added_gib', 0):.2f} GiB"
              + (f"; {build['error']}" if "error" in build else ""))
    print(summary_table(rows, args.device == "cuda"))
    print()
    for line in details(rows) + [""] + notes(rows, args.device == "cuda"):
        print(line)


def parent_main(args: argparse.Namespace) -> int:
    """Build what the chosen scenarios need, run each in a child, report."""
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    info = machine_info(args.device)
    deadline = time.perf_counter() + args.budget_s if args.budget_s else None
    needed = list(dict.fromkeys(SCENARIOS[key].size for key in args.only))
    print(f"# building {', '.join(needed)} in {workdir}", flush=True)
    done, build_wall = run_child("build:" + ",".join(needed), args, args.timeout_s)
    print(f"# builds done in {build_wall:.0f} s (wall, imports included)", flush=True)
    builds: dict[str, dict[str, Any]] = done.get("builds") or {
        key: {"status": "error", "error": done.get("error")} for key in needed}
    rows: list[Row] = []
    for key in args.only:
        scenario = SCENARIOS[key]
        left = args.timeout_s
        if deadline is not None:
            left = min(left, deadline - time.perf_counter())
        if left < MIN_SCENARIO_S:  # too little left to load and call a model: say so
            rows.append(Row(key, scenario.name, "skipped: time budget spent"))
            continue
        if builds[scenario.size].get("status") != "ok":
            why = f"build failed: {builds[scenario.size].get('error')}"
            rows.append(Row(key, scenario.name, "error", result={"error": why}))
            continue
        print(f"# scenario {key} {scenario.name}", flush=True)
        result, wall = run_child(key, args, left)
        rows.append(Row(key, scenario.name, str(result.get("status", "error")), wall, result))
    print_report(rows, info, builds, args)
    if args.json:
        payload = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()},
                   "builds": builds, "build_wall_s": build_wall, "rows": [asdict(r) for r in rows],
                   "notes": notes(rows, args.device == "cuda")}
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    if not args.keep:
        for build in builds.values():
            if build.get("directory"):
                shutil.rmtree(build["directory"], ignore_errors=True)
        shutil.rmtree(workdir / "qlora-run", ignore_errors=True)
        for stale in workdir.glob("result-*.json"):
            stale.unlink()
        with contextlib.suppress(OSError):
            workdir.rmdir()  # only when nothing else is left in it
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Options; ``--only`` becomes a list of scenario letters, defaults depend on the mode."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.real_size",
        description="Real-size PaliGemma 2 3B/10B (random weights, task head) written to disk "
        "and loaded through the project's loader: load time, seconds per image and memory per "
        "scenario, each in its own process. Not a test; writes about 26 GB.",
    )
    names = ", ".join(f"{s.key}={s.name}" for s in SCENARIOS.values())
    parser.add_argument("--only", default="a,b,c,d", help=f"scenarios, by letter or name: {names}")
    parser.add_argument("--workdir", default=None,
                        help="where checkpoints go (default /tmp/real_size-bench, "
                        "/tmp/real_size-bench-tiny with --tiny)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the checkpoints (a later run reuses them)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--tiny", action="store_true", help="tiny configs end to end (a check)")
    parser.add_argument("--timeout-s", type=float, default=None,
                        help="per build or scenario (default 7200; 300 with --tiny or cuda)")
    parser.add_argument("--budget-s", type=float, default=0.0,
                        help="start nothing after this many seconds (0: no limit)")
    parser.add_argument("--max-rss-gib", type=float, default=16.0,
                        help="a CPU scenario whose anonymous RSS passes this stops with that "
                        "error (protects a shared machine)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    by_name = {s.name: s.key for s in SCENARIOS.values()}
    items = [item.strip() for item in args.only.split(",") if item.strip()]
    chosen = [by_name.get(item, item) for item in items]
    unknown = [c for c in chosen if c not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; valid: {names}")
    args.only = list(dict.fromkeys(chosen))
    if args.workdir is None:
        args.workdir = "/tmp/real_size-bench" + ("-tiny" if args.tiny else "")
    if args.timeout_s is None:
        args.timeout_s = 300.0 if (args.tiny or args.device == "cuda") else 7200.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the parent, or one child (``--child``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: no hub here
    args = parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("--device cuda asked for but torch.cuda.is_available() is False here",
                  file=sys.stderr)
            return 2
    return child_main(args) if args.child else parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
