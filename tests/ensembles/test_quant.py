"""Device/dtype/quantisation policy, quantised loading on CPU, and LoRA checkpoints."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ensembles import quant  # noqa: E402
from ensembles.checkpoint import read_member_spec, write_member_spec  # noqa: E402
from ensembles.errors import CheckpointError, MemberUnavailableError  # noqa: E402
from ensembles.members.paligemma_classifier import PaliGemmaClassifier  # noqa: E402
from ensembles.members.paligemma_common import load_paligemma  # noqa: E402
from ensembles.registry import create_member  # noqa: E402
from ensembles.checkpoint import save_paligemma_checkpoint  # noqa: E402
from ensembles.demo_arch.paligemma import (  # noqa: E402
    QUANTIZABLE_TEXT,
    write_tiny_paligemma_checkpoint,
)

# Language-model widths at multiples of 128: what every bitsandbytes 4-bit kernel accepts.
SMALL = dict(image_size=32, patch=16, siglip_hidden=32, siglip_layers=1, text_layers=2,
             **QUANTIZABLE_TEXT)
NARROW = dict(image_size=32, patch=16, siglip_hidden=32, siglip_layers=1, text_hidden=64,
              text_layers=1)  # k/v projections 16 wide: refused in 4-bit on every machine
CPU_QUANT_PROBLEM = quant.bitsandbytes_problem(torch.device("cpu"))
needs_cpu_bnb = pytest.mark.skipif(
    CPU_QUANT_PROBLEM is not None, reason=f"bitsandbytes cannot quantise here: {CPU_QUANT_PROBLEM}"
)


def _images(n: int = 3) -> list[np.ndarray]:
    return [np.random.default_rng(i).random((40, 50), dtype=np.float32) for i in range(n)]


def _scores(member) -> list[float]:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bitsandbytes' "inputs will be cast" notices
        return [o.score for o in member.predict(_images())]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A base classifier with a task head, a LoRA adapter over it, and the merged model."""
    from peft import get_peft_model

    root = tmp_path_factory.mktemp("pg_quant")
    spec = write_tiny_paligemma_checkpoint(root / "base", "paligemma-classifier",
                                           task_head=4, **SMALL)
    loaded = load_paligemma(root / "base")
    peft_model = get_peft_model(loaded.model, quant.language_model_lora_config())
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # B starts at zero; make the adapter change the outputs
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    peft_model.save_pretrained(root / "adapter")
    write_member_spec(root / "adapter", spec.replace(options={"base": "../base"}))
    save_paligemma_checkpoint(root / "merged", peft_model.merge_and_unload(), loaded.processor,
                              spec)
    return {"base": root / "base", "adapter": root / "adapter", "merged": root / "merged"}


def test_dtype_policy() -> None:
    assert quant.resolve_dtype(torch.device("cpu")) == torch.float32
    assert quant.resolve_dtype(torch.device("cuda")) == torch.bfloat16
    assert quant.resolve_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    assert quant.resolve_dtype(torch.device("cpu"), torch.float16) == torch.float16
    with pytest.raises(quant.PolicyError, match="dtype must be one of"):
        quant.resolve_dtype(torch.device("cpu"), "int8")


def test_device_policy() -> None:
    assert quant.resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert quant.resolve_device("auto").type == expected
    with pytest.raises(quant.PolicyError, match="device must be"):
        quant.resolve_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(MemberUnavailableError, match="CUDA is not available"):
            quant.resolve_device("cuda")


def test_quantization_names() -> None:
    assert quant.normalise_quantization(None) is None
    assert quant.normalise_quantization("none") is None
    assert quant.normalise_quantization("INT8") == "8bit"
    assert quant.normalise_quantization("nf4") == "4bit"
    with pytest.raises(quant.PolicyError, match="8bit, 4bit"):
        quant.normalise_quantization("3bit")


@needs_cpu_bnb
def test_bitsandbytes_configs_keep_vision_projector_and_head_full() -> None:
    four = quant.quantization_config("4bit", torch.device("cpu"), torch.bfloat16)
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4"
    assert four.bnb_4bit_use_double_quant and four.bnb_4bit_compute_dtype == torch.bfloat16
    eight = quant.quantization_config("8bit", torch.device("cpu"), torch.float32)
    assert eight.load_in_8bit
    for config in (four, eight):
        assert set(config.llm_int8_skip_modules) == {
            "model.vision_tower", "model.multi_modal_projector", "lm_head"
        }
    assert quant.quantization_config(None, torch.device("cpu"), torch.float32) is None


def test_quantisation_refused_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quant, "bitsandbytes_problem", lambda device: "no backend for cpu")
    with pytest.raises(MemberUnavailableError, match="no backend for cpu.*quantization=None"):
        quant.quantization_config("8bit", torch.device("cpu"), torch.float32)


@needs_cpu_bnb
@pytest.mark.parametrize("mode", ["8bit", "4bit"])
def test_quantised_cpu_load_leaves_siglip_projector_head_unquantised(
    checkpoints: dict[str, Path], mode: str
) -> None:
    loaded = load_paligemma(checkpoints["base"], quantization=mode)
    names = quant.quantized_module_names(loaded.model)
    assert names, "nothing was quantised"
    assert all(name.startswith("model.language_model.") for name in names), names
    model = loaded.model
    assert type(model.lm_head) is torch.nn.Linear
    assert type(model.model.multi_modal_projector.linear) is torch.nn.Linear
    assert type(model.model.multi_modal_projector.key_proj) is torch.nn.Linear
    for layer in model.model.vision_tower.encoder.layers:
        assert type(layer.self_attn.q_proj) is torch.nn.Linear
    member = create_member("paligemma-classifier", checkpoints["base"], quantization=mode)
    full = _scores(create_member("paligemma-classifier", checkpoints["base"]))
    quantised = _scores(member)
    assert all(0.0 <= s <= 1.0 for s in quantised)
    np.testing.assert_allclose(quantised, full, atol=0.03)
    assert quant.weight_bytes(loaded.model) < quant.weight_bytes(
        load_paligemma(checkpoints["base"]).model
    )


def test_4bit_refuses_widths_its_kernels_cannot_take_on_every_machine(tmp_path: Path) -> None:
    """Refused before loading, whatever this CPU's bitsandbytes kernel would have done."""
    write_tiny_paligemma_checkpoint(tmp_path / "narrow", "paligemma-classifier", **NARROW)
    with pytest.raises(quant.PolicyError, match=r"4bit: .*multiples of 128.*self_attn\.k_proj "
                                                r"\(64->16\).*without quantization or in 8bit"):
        load_paligemma(tmp_path / "narrow", quantization="4bit")


def test_predicted_quantised_layers_are_the_ones_bitsandbytes_replaces(
    checkpoints: dict[str, Path]
) -> None:
    """The shape check looks at exactly the layers a quantised load replaces."""
    from transformers import PaliGemmaConfig

    from ensembles.task_head import TaskHeadPaliGemmaForConditionalGeneration

    config = PaliGemmaConfig.from_pretrained(checkpoints["base"])
    with torch.device("meta"):
        skeleton = TaskHeadPaliGemmaForConditionalGeneration(config)
    predicted = [name for name, _, _ in quant.quantizable_linears(skeleton)]
    assert quant.unsupported_quantized_shapes(skeleton, "4bit") == []
    assert quant.unsupported_quantized_shapes(skeleton, "8bit") == []
    if CPU_QUANT_PROBLEM is None:
        loaded = load_paligemma(checkpoints["base"], quantization="8bit")
        assert predicted == quant.quantized_module_names(loaded.model)
    config.text_config.head_dim = 32
    with torch.device("meta"):
        odd = TaskHeadPaliGemmaForConditionalGeneration(config)
    assert quant.unsupported_quantized_shapes(odd, "4bit")
    assert quant.unsupported_quantized_shapes(odd, "8bit") == []  # 8-bit kernels take any width


def test_lora_targets_only_the_language_model(checkpoints: dict[str, Path]) -> None:
    from peft import get_peft_model

    model = get_peft_model(load_paligemma(checkpoints["base"]).model,
                           quant.language_model_lora_config())
    adapted = [n for n, _ in model.named_modules() if n.endswith(".lora_A")]
    assert adapted
    assert all(".language_model." in n for n in adapted), adapted
    kinds = {n.split(".")[-2] for n in adapted}
    assert kinds == {"q_proj", "k_proj", "v_proj", "o_proj"}
    config = quant.language_model_lora_config()
    assert (config.r, config.lora_alpha, config.lora_dropout) == (16, 32, 0.05)
    with pytest.raises(quant.PolicyError):
        quant.language_model_lora_config(r=0)


def test_adapter_and_merged_checkpoints_score_the_same(checkpoints: dict[str, Path]) -> None:
    adapter = create_member("paligemma-classifier", checkpoints["adapter"])
    merged = create_member("paligemma-classifier", checkpoints["merged"])
    base = create_member("paligemma-classifier", checkpoints["base"])
    assert isinstance(adapter, PaliGemmaClassifier)
    np.testing.assert_allclose(_scores(adapter), _scores(merged), atol=1e-5)
    assert np.abs(np.array(_scores(adapter)) - np.array(_scores(base))).max() > 1e-3


@needs_cpu_bnb
def test_adapter_over_8bit_base(checkpoints: dict[str, Path]) -> None:
    loaded = load_paligemma(checkpoints["adapter"], quantization="8bit")
    assert loaded.adapter == "unmerged"
    member = create_member("paligemma-classifier", checkpoints["adapter"], quantization="8bit")
    merged = create_member("paligemma-classifier", checkpoints["merged"])
    np.testing.assert_allclose(_scores(member), _scores(merged), atol=0.03)


def test_adapter_needs_its_base(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "adapter"
    shutil.copytree(checkpoints["adapter"], broken)
    spec = read_member_spec(broken)
    write_member_spec(broken, spec.replace(options={}))
    with pytest.raises(CheckpointError, match="options.base"):
        load_paligemma(broken)
    write_member_spec(broken, spec.replace(options={"base": "../nowhere"}))
    with pytest.raises(CheckpointError, match="nowhere. has no config.json"):
        load_paligemma(broken)


def test_memory_estimate_from_parameter_counts() -> None:
    # PaliGemma 2 3B in bf16: ~3.03e9 parameters -> about 5.6 GiB of weights
    assert 5.4 < quant.estimate_weight_gib(3.03e9, 0.0, None) < 5.9
    # 10B in 8-bit: 8.3e9 language-model Linear weights at 1 byte, 1.4e9 kept in bf16
    eight = quant.estimate_weight_gib(9.7e9, 8.3e9, "8bit")
    assert 10.0 < eight < 10.5
    assert quant.estimate_weight_gib(9.7e9, 8.3e9, "4bit") < eight
