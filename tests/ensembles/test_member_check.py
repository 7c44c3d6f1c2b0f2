"""Checking and importing stock checkpoints that the project's own factory did not make.

Each bad checkpoint is refused three ways with the same named check: by ``check_member``, by
``import_member`` (which then leaves no folder behind), and by the loader itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ensembles.checkpoint import MemberSpec, read_member_spec, write_member_spec
from ensembles.errors import CheckpointError
from ensembles.loc_tokens import parse_detections
from ensembles.member_check import check_member
from ensembles.member_check.report import FAILED, PASSED
from ensembles.member_import import ImportOptions, import_member
from ensembles.registry import create_member

CLS, DET = "paligemma-classifier", "paligemma-detector"
PALIGEMMA_CHECKS = ["member.json", "files", "config", "tokenizer", "loc-tokens", "image-token", "vocab",
                    "answers", "prompt", "preprocessing", "weights"]
GOOD = {
    "gemma2": {},
    "gemma1": {"text_model": "gemma"},
    "gemma-special-order": {"specials": ("<pad>", "<eos>", "<bos>", "<unk>")},
    "transformers4-key-names": {"legacy_keys": True},
}


def _images(n: int = 2) -> list[np.ndarray]:
    return [np.random.default_rng(i).random((40, 50), dtype=np.float32) for i in range(n)]


@pytest.fixture(scope="module")
def sources(stock: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stock")
    return {name: stock.stock_checkpoint(root / name, **kwargs) for name, kwargs in GOOD.items()}


def _status(report: Any) -> dict[str, str]:
    return {check.name: check.status for check in report.checks}


@pytest.mark.parametrize("which", list(GOOD))
@pytest.mark.parametrize("kind", [CLS, DET])
def test_stock_checkpoints_import_check_and_run(sources: dict[str, Path], tmp_path: Path, which: str,
                                                kind: str) -> None:
    out = tmp_path / "member"
    result = import_member(sources[which], out, ImportOptions(kind=kind, intended_use="research"))
    assert _status(result.report) == {name: PASSED for name in PALIGEMMA_CHECKS}
    assert _status(check_member(out)) == {name: PASSED for name in PALIGEMMA_CHECKS}
    spec = read_member_spec(out)
    assert (spec.kind, spec.intended_use, spec.image_size, spec.name) == (kind, "research", 32, "member")
    assert spec.prompt == ("Detect Fracture" if kind == DET else "Is there a fracture in this x-ray?")
    assert not list(tmp_path.glob(".member.importing-*"))
    member = create_member(kind, out, **({"max_boxes": 2} if kind == DET else {}))
    outputs = member.predict(_images())
    assert all(0.0 <= o.score <= 1.0 for o in outputs)
    if kind == DET:
        for o in outputs:
            parsed = parse_detections(o.raw or "")
            assert o.raw == "Normal" or (len(parsed) >= 1 and parsed.dropped == 0)


def test_transformers4_key_names_load_the_same_weights(sources: dict[str, Path]) -> None:
    """Same seed, keys renamed the transformers-4 way: the check and the loader map them alike."""
    scores = {}
    for which in ("gemma2", "transformers4-key-names"):
        folder = sources[which]
        write_member_spec(folder, MemberSpec(kind=CLS, name="x", image_size=32,
                                             prompt="Is there a fracture in this x-ray?",
                                             labels=("Fracture", "Normal")))
        scores[which] = [o.score for o in create_member(CLS, folder).predict(_images(3))]
        (folder / "member.json").unlink()
    assert scores["gemma2"] == scores["transformers4-key-names"]


# -- bad checkpoints ----------------------------------------------------------------------------

def _bad(stock: Any, root: Path, case: str) -> tuple[Path, dict[str, Any]]:
    """A stock folder broken one way, and the import options that meet the break."""
    options: dict[str, Any] = {}
    if case == "loc-tokens-missing":
        return stock.stock_checkpoint(root, loc="missing"), options
    if case == "loc-tokens-interleaved":
        return stock.stock_checkpoint(root, loc="interleaved"), options
    folder = stock.stock_checkpoint(root)
    if case == "answers-same-first-token":
        options["labels"] = ("Fracture", "Fracture present")
    elif case == "image-token-count":
        stock.edit_json(folder / "processor_config.json", image_processor__image_seq_length=9)
    elif case == "image-token-id":
        config = json.loads((folder / "config.json").read_text())
        stock.edit_json(folder / "config.json", image_token_index=config["image_token_index"] - 1)
    elif case == "weights-shape":
        stock.edit_json(folder / "config.json", text_config__intermediate_size=384)
    elif case == "vocab-too-small":
        stock.edit_json(folder / "config.json", text_config__vocab_size=1000)
    elif case == "prompt-newline":
        options["prompt"] = "Is there a fracture?\nAnswer"
    elif case == "pickle-only":
        (folder / "model.safetensors").unlink()
        torch.save({"weights": torch.zeros(1)}, folder / "pytorch_model.bin")
    return folder, options


BAD_CASES = {
    "loc-tokens-missing": ("loc-tokens", "lacks 1024 of the 1024 loc tokens"),
    "loc-tokens-interleaved": ("loc-tokens", "not contiguous: <loc0001> is"),
    "answers-same-first-token": ("answers", "must start with different ordinary tokens"),
    "image-token-count": ("image-token", "puts 9 image tokens in a prompt but the model produces 4"),
    "image-token-id": ("image-token", "but the config's image_token_id is"),
    "weights-shape": ("weights", "shape differs: model.language_model.layers.0.mlp.down_proj.weight"),
    "vocab-too-small": ("vocab", "has 1000 embedding rows"),
    "prompt-newline": ("prompt", "holds a newline"),
    "pickle-only": ("files", "no safetensors weights (found pytorch_model.bin: pickle, never loaded)"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_checkpoints_are_refused_by_check_import_and_loader(stock: Any, tmp_path: Path,
                                                               case: str) -> None:
    check, phrase = BAD_CASES[case]
    folder, options = _bad(stock, tmp_path / "src", case)
    out = tmp_path / "member"
    pattern = phrase.replace("(", ".").replace(")", ".")
    if case == "pickle-only":  # refused before anything is copied
        pattern = "no safetensors weights .found pytorch_model.bin: pickle, never loaded."
    else:
        pattern = rf"fails \d+ check\(s\):.*{check}: .*{pattern}"
    with pytest.raises(CheckpointError, match=pattern):
        import_member(folder, out, ImportOptions(kind=CLS, intended_use="research", **options))
    assert not out.exists() and not list(tmp_path.glob(".member.importing-*"))  # nothing left
    labels = options.get("labels", ("Fracture", "Normal"))
    write_member_spec(folder, MemberSpec(kind=CLS, name="x", image_size=32, labels=labels,
                                         prompt=options.get("prompt", "Is there a fracture?")))
    report = check_member(folder)
    assert _status(report)[check] == FAILED and phrase in next(
        c.detail for c in report.checks if c.name == check)
    with pytest.raises(CheckpointError, match=f"{check}: "):
        create_member(CLS, folder)  # the loader runs the same checks before reading weights


def test_import_keeps_safetensors_and_leaves_pickles_behind(stock: Any, tmp_path: Path) -> None:
    folder = stock.stock_checkpoint(tmp_path / "src")
    torch.save({"weights": torch.zeros(1)}, folder / "pytorch_model.bin")
    (folder / "training_args.bin").write_bytes(b"\x80\x04")
    result = import_member(folder, tmp_path / "m", ImportOptions(kind=DET, intended_use="clinical",
                                                                  name="pg2-det", threshold=0.3))
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert "model.safetensors" in files and "member.json" in files
    assert not any(name.endswith(".bin") for name in files)
    assert sorted(Path(p).name for p in result.left_behind) == ["pytorch_model.bin", "training_args.bin"]
    spec = read_member_spec(tmp_path / "m")
    assert (spec.name, spec.intended_use, spec.threshold) == ("pg2-det", "clinical", 0.3)
    assert _status(result.report)["files"] == PASSED


def test_import_refuses_bad_options_and_existing_folders(stock: Any, tmp_path: Path) -> None:
    folder = stock.stock_checkpoint(tmp_path / "src")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    cases = [
        (tmp_path / "full", ImportOptions(kind=CLS, intended_use="research"), "exists and is not an empty folder"),
        (tmp_path / "a", ImportOptions(kind="detr", intended_use="research"), "holds a 'paligemma' model"),
        (tmp_path / "b", ImportOptions(kind=CLS, intended_use="clinic"), "--intended-use must be one of"),
        (tmp_path / "c", ImportOptions(kind=CLS, intended_use="demo", image_size=224),
         "--image-size 224 but the model's SigLIP takes 32 px"),
        (tmp_path / "d", ImportOptions(kind="refiner", intended_use="demo"), "--kind must be one of"),
    ]
    for out, options, message in cases:
        with pytest.raises(CheckpointError, match=message.replace("(", ".")):
            import_member(folder, out, options)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "src"]
    empty = tmp_path / "empty"
    empty.mkdir()
    import_member(folder, empty, ImportOptions(kind=CLS, intended_use="demo"))  # an empty folder is fine
    assert read_member_spec(empty).intended_use == "demo"


def test_import_with_a_lora_adapter(stock: Any, tmp_path: Path) -> None:
    from peft import get_peft_model

    from ensembles.members.paligemma_common import load_paligemma
    from ensembles.quant import language_model_lora_config

    base = stock.stock_checkpoint(tmp_path / "base")
    plain = tmp_path / "plain"
    import_member(base, plain, ImportOptions(kind=CLS, intended_use="research"))
    model = get_peft_model(load_paligemma(plain).model, language_model_lora_config())
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    model.save_pretrained(tmp_path / "adapter")
    out = tmp_path / "tuned"
    result = import_member(base, out, ImportOptions(kind=CLS, intended_use="research",
                                                    adapter=tmp_path / "adapter"))
    assert _status(result.report)["adapter"] == PASSED
    assert (out / "adapter_config.json").is_file() and (out / "base" / "model.safetensors").is_file()
    assert read_member_spec(out).options["base"] == "base"
    tuned = [o.score for o in create_member(CLS, out).predict(_images())]
    untuned = [o.score for o in create_member(CLS, plain).predict(_images())]
    assert tuned != untuned  # the adapter is applied


def test_detr_import_and_class_check(tmp_path: Path) -> None:
    from ensembles.detr_arch import DetrArchitecture, build_detr

    def stock_detr(folder: Path, labels: tuple[str, ...]) -> Path:
        build_detr(DetrArchitecture(backbone="resnet18", labels=labels, num_queries=5, d_model=32, encoder_layers=1,
                   decoder_layers=1, ffn_dim=64, attention_heads=2)).save_pretrained(folder)
        return folder

    good = stock_detr(tmp_path / "fx", ("Fracture",))
    result = import_member(good, tmp_path / "m", ImportOptions(kind="detr", intended_use="research",
                                                               image_size=64))
    assert _status(result.report) == {n: PASSED for n in ("member.json", "files", "config", "weights")}
    spec = read_member_spec(tmp_path / "m")
    assert (spec.labels, spec.resize, spec.image_size) == (("Fracture",), "letterbox", 64)
    assert len(create_member("detr", tmp_path / "m").predict(_images(1))) == 1
    coco = stock_detr(tmp_path / "coco", ("person", "bicycle"))
    with pytest.raises(CheckpointError, match="config: no class names a fracture"):
        import_member(coco, tmp_path / "n", ImportOptions(kind="detr", intended_use="research"))
    renamed = import_member(coco, tmp_path / "o", ImportOptions(
        kind="detr", intended_use="research", labels=("displaced fracture", "undisplaced fracture")))
    assert renamed.report.ok


def test_report_lines_and_error_name_every_problem(stock: Any, tmp_path: Path) -> None:
    folder, _ = _bad(stock, tmp_path / "src", "weights-shape")
    stock.edit_json(folder / "processor_config.json", image_processor__image_seq_length=9)
    write_member_spec(folder, MemberSpec(kind=CLS, name="x", image_size=32, labels=("Fracture", "Normal"),
                                         prompt="Is there a fracture?"))
    report = check_member(folder)
    assert [c.name for c in report.problems] == ["image-token", "weights"]
    assert report.lines()[0].startswith("ok   member.json ")
    assert any(line.startswith("FAIL weights ") for line in report.lines())
    with pytest.raises(CheckpointError, match=r"fails 2 check\(s\): image-token: .*; weights: "):
        report.raise_for_problems()


def test_member_kind_checks_member_json_first(tmp_path: Path) -> None:
    assert _status(check_member(tmp_path)) == {"member.json": FAILED}
    write_member_spec(tmp_path, MemberSpec(kind="detr", name="d", image_size=64))
    assert "expected 'paligemma-detector'" in check_member(tmp_path, DET).checks[0].detail
    shutil.rmtree(tmp_path)
    tmp_path.mkdir()
    refiner = MemberSpec(kind="refiner", name="r", image_size=64)
    write_member_spec(tmp_path, refiner)
    assert _status(check_member(tmp_path)) == {"member.json": PASSED, "files": FAILED}
