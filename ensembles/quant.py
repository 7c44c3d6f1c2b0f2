"""Device, dtype and quantisation policy for the PaliGemma members, and their LoRA layout.

Policy (one place, so every member and every training recipe agrees):

- dtype: bfloat16 on CUDA, float32 on CPU, unless the site config names one.
- quantisation: ``None``, ``"8bit"`` (LLM.int8) or ``"4bit"`` (nf4 with double quantisation,
  bfloat16 compute on CUDA) through bitsandbytes. Only the language model is quantised:
  SigLIP, the projector (with the task head) and ``lm_head`` stay in full precision, because
  the vision side is small and sensitive and ``lm_head`` decides the first-step scores. The
  skip list must use full names from the model's root (``llm_int8_skip_modules`` matches from
  the start of the name; ``vision_tower`` alone would not match and SigLIP would be quantised).
- CPU: bitsandbytes 0.50 runs 8-bit and 4-bit on a CPU (not faster than float32 there; useful
  to test the path). When the installed bitsandbytes cannot, loading is refused with a
  :class:`MemberUnavailableError` that says why and what to do.
- LoRA (the paper's QLoRA recipe): r=16, alpha=32, dropout 0.05 on the *language model's*
  ``q/k/v/o_proj`` only. A plain ``target_modules=["q_proj", ...]`` also hits SigLIP's
  attention, so the target is a regex on the full module name.

GPU memory of the real members, estimated from parameter counts (weights only; activations and
the KV cache come on top, see the README): PaliGemma 2 3B in bf16 about 6 GiB, PaliGemma 2 10B
in 8-bit about 10-11 GiB (its 0.4B SigLIP and projector and the 0.9B ``lm_head`` kept in bf16).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch

from ensembles.errors import EnsembleError, MemberUnavailableError

QUANTIZATION_MODES: tuple[str | None, ...] = (None, "8bit", "4bit")

SKIP_MODULES: tuple[str, ...] = ("model.vision_tower", "model.multi_modal_projector", "lm_head")
"""Kept in full precision under quantisation (full names from the model root)."""

LORA_TARGET_REGEX = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)$"
"""The language model's attention projections only (never SigLIP's, never the task head)."""

_DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}


class PolicyError(EnsembleError, ValueError):
    """A device, dtype or quantisation setting is not one the policy knows."""


def resolve_device(device: str | torch.device | None = "cpu") -> torch.device:
    """``"auto"``/``None`` picks CUDA when present; a CUDA device that is absent is refused.

    Raises:
        MemberUnavailableError: CUDA was asked for on a machine without it.
        PolicyError: the device string is not one torch knows.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise PolicyError(
            f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r} ({exc})"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise MemberUnavailableError(
            f"device {device!r} asked for but CUDA is not available here; use device='cpu' "
            "(slow) or run on a GPU machine"
        )
    return resolved


def resolve_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """The compute dtype: bfloat16 on CUDA, float32 on CPU, unless ``dtype`` names one.

    Raises:
        PolicyError: ``dtype`` is not a known floating dtype name.
    """
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise PolicyError(f"dtype must be a floating dtype, got {dtype}")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise PolicyError(
            f"dtype must be one of {', '.join(sorted(_DTYPES))}, got {dtype!r}"
        )
    return _DTYPES[key]


def normalise_quantization(quantization: str | None) -> str | None:
    """Accept ``None``/``"none"``, ``"8bit"``/``"int8"``, ``"4bit"``/``"nf4"``.

    Raises:
        PolicyError: any other value.
    """
    if quantization is None:
        return None
    key = str(quantization).lower().replace("-", "").replace("_", "")
    aliases = {"none": None, "": None, "8bit": "8bit", "int8": "8bit", "4bit": "4bit",
               "nf4": "4bit", "int4": "4bit"}
    if key not in aliases:
        raise PolicyError(
            f"quantization must be one of none, 8bit, 4bit, got {quantization!r}"
        )
    return aliases[key]


def bitsandbytes_problem(device: torch.device) -> str | None:
    """Why bitsandbytes cannot quantise on ``device`` here, or ``None`` when it can."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (pip install bitsandbytes)"
    if importlib.util.find_spec("accelerate") is None:
        return "accelerate is not installed (pip install accelerate), transformers needs it"
    try:
        import bitsandbytes
    except Exception as exc:  # noqa: BLE001 - any import failure means "cannot run here"
        return f"bitsandbytes fails to import: {exc}"
    supported = getattr(bitsandbytes, "supported_torch_devices", None)
    if supported is not None and device.type not in supported:
        return (
            f"the installed bitsandbytes {getattr(bitsandbytes, '__version__', '?')} has no "
            f"{device.type} backend (supported: {', '.join(sorted(supported))})"
        )
    if supported is None and device.type == "cpu":
        return (
            f"the installed bitsandbytes {getattr(bitsandbytes, '__version__', '?')} "
            "quantises on CUDA only; upgrade to bitsandbytes>=0.45 for CPU or use a GPU"
        )
    return None


class _OnceFilter(logging.Filter):
    """Lets a repeated log message through once (bitsandbytes logs a cast notice per matmul)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        if self.seen:
            return False
        self.seen = True
        return True


def quiet_int8_cast_notice() -> None:
    """Log bitsandbytes' "inputs will be cast ... to float16" notice once, not per layer.

    8-bit matmuls run in float16 inside bitsandbytes whatever the compute dtype; the notice
    would otherwise flood a night's log with one line per layer per batch.
    """
    target = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _OnceFilter) for f in target.filters):
        target.addFilter(_OnceFilter("MatMul8bitLt: inputs will be cast"))


def quantization_config(
    quantization: str | None,
    device: torch.device,
    compute_dtype: torch.dtype,
    *,
    skip_modules: tuple[str, ...] = SKIP_MODULES,
) -> Any:
    """The ``BitsAndBytesConfig`` for ``quantization`` (``None`` when not quantised).

    Raises:
        MemberUnavailableError: bitsandbytes cannot quantise on ``device`` here (says why).
        PolicyError: unknown quantisation mode.
    """
    mode = normalise_quantization(quantization)
    if mode is None:
        return None
    problem = bitsandbytes_problem(device)
    if problem is not None:
        raise MemberUnavailableError(
            f"cannot load the model in {mode} on {device.type}: {problem}; use "
            "quantization=None (full precision) or a machine where bitsandbytes works"
        )
    from transformers import BitsAndBytesConfig

    if mode == "8bit":
        quiet_int8_cast_notice()
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip_modules))
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=list(skip_modules),
    )


def from_pretrained_kwargs(
    device: torch.device, dtype: torch.dtype, quantization: str | None
) -> dict[str, Any]:
    """Keyword arguments for ``from_pretrained`` under the policy: local files only, and
    safetensors only (a pickled ``pytorch_model.bin`` runs code when loaded: never)."""
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True, "use_safetensors": True}
    config = quantization_config(quantization, device, dtype)
    if config is not None:
        kwargs["quantization_config"] = config
        kwargs["device_map"] = {"": device.index if device.type == "cuda" else device.type}
    return kwargs


QUANT_WIDTH_MULTIPLE: dict[str, int] = {"4bit": 128}
"""Width (in and out features) every quantised ``nn.Linear`` must be a multiple of, per mode.

4-bit: bitsandbytes 0.50's CPU kernel on AVX-512 BF16 machines packs weights in blocks of 32
output rows and 64-wide input blocks and asserts both (``N must be divisible by block_n``, then
``shape '[32, 0]' is invalid``); other machines pick other kernels. Multiples of 128 pass every
bitsandbytes CPU and GPU 4-bit kernel, and every PaliGemma 2 size has them, so the rule is the
same on every machine: a checkpoint refused here is refused everywhere. 8-bit has no such rule
(its kernels fall back for odd shapes).
"""


def _skipped(name: str, skip_modules: tuple[str, ...]) -> bool:
    return any(name == skip or name.startswith(skip + ".") for skip in skip_modules)


def quantizable_linears(
    model: torch.nn.Module, skip_modules: tuple[str, ...] = SKIP_MODULES
) -> list[tuple[str, int, int]]:
    """``(name, in_features, out_features)`` of each ``nn.Linear`` quantisation would replace.

    Works on a model built on the ``meta`` device (no memory), which is how
    :func:`unsupported_quantized_shapes` is used before a load.
    """
    found: list[tuple[str, int, int]] = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not _skipped(name, skip_modules):
            found.append((name, int(module.in_features), int(module.out_features)))
    return found


def unsupported_quantized_shapes(
    model: torch.nn.Module, quantization: str | None,
    skip_modules: tuple[str, ...] = SKIP_MODULES,
) -> list[str]:
    """Layers whose widths the ``quantization`` kernels refuse, as ``"name (in->out)"``.

    Empty when every layer fits :data:`QUANT_WIDTH_MULTIPLE` (or the mode has no rule).
    """
    mode = normalise_quantization(quantization)
    multiple = QUANT_WIDTH_MULTIPLE.get(mode or "")
    if multiple is None:
        return []
    return [
        f"{name} ({fan_in}->{fan_out})"
        for name, fan_in, fan_out in quantizable_linears(model, skip_modules)
        if fan_in % multiple or fan_out % multiple
    ]


def check_quantizable_shapes(
    model: torch.nn.Module, quantization: str | None, *, what: str
) -> None:
    """Refuse, before any weight is read, a model whose layers ``quantization`` cannot run.

    Raises:
        PolicyError: naming the first offending layers and what to do instead.
    """
    bad = unsupported_quantized_shapes(model, quantization)
    if not bad:
        return
    mode = normalise_quantization(quantization)
    multiple = QUANT_WIDTH_MULTIPLE[str(mode)]
    shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
    raise PolicyError(
        f"cannot load {what} in {mode}: bitsandbytes' {mode} kernels need every quantised "
        f"layer's input and output widths to be multiples of {multiple}, and {len(bad)} "
        f"layer(s) are not: {shown}; load it without quantization or in 8bit, or use a model "
        f"whose language-model widths are multiples of {multiple} (every PaliGemma 2 size is)"
    )


def quantized_module_names(model: torch.nn.Module) -> list[str]:
    """Names of the bitsandbytes-quantised Linear layers in ``model`` (empty when none)."""
    names: list[str] = []
    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind in ("Linear8bitLt", "Linear4bit", "LinearNF4", "LinearFP4"):
            names.append(name)
    return names


def language_model_lora_config(
    r: int = 16, alpha: int = 32, dropout: float = 0.05, *, inference_mode: bool = False
) -> Any:
    """The paper's LoRA: the language model's q/k/v/o projections only.

    Raises:
        PolicyError: a non-positive rank or alpha, or dropout outside ``[0, 1)``.
    """
    if r < 1 or alpha <= 0 or not 0.0 <= dropout < 1.0:
        raise PolicyError(
            f"LoRA needs r >= 1, alpha > 0 and 0 <= dropout < 1, got r={r}, alpha={alpha}, "
            f"dropout={dropout}"
        )
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=LORA_TARGET_REGEX,
        bias="none",
        task_type="CAUSAL_LM",
        inference_mode=inference_mode,
    )


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes the model's parameters and buffers occupy as loaded (quantised ones included)."""
    total = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        total += tensor.numel() * tensor.element_size()
    return total


def estimate_weight_gib(
    total_params: float, quantized_params: float, quantization: str | None
) -> float:
    """Weights-only GPU memory estimate from parameter counts (not a measurement).

    Args:
        total_params: all parameters.
        quantized_params: those in the quantised language model (the rest stay bf16).
        quantization: ``None`` (bf16), ``"8bit"`` (1 byte + small scales) or ``"4bit"``
            (about 0.53 bytes with double-quantised nf4 scales).
    """
    mode = normalise_quantization(quantization)
    per = {None: 2.0, "8bit": 1.0, "4bit": 0.53}[mode]
    kept = total_params - (quantized_params if mode else 0.0)
    used = kept * 2.0 + (quantized_params * per if mode else 0.0)
    return used / 2**30
