"""PaliGemma recipes on tiny random-init models and a synthetic prepared DATA folder.

The DATA folder follows ``screen prepare``'s layout (train/val ``classifier.jsonl``,
``detector.jsonl``, ``boxes.jsonl`` and 16-bit PNGs): 48 px grey images, a bright rectangle
(the "fracture") on every second one, its box in the records.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from ensembles.loc_tokens import format_detections, parse_detections
from ensembles.quant import quantized_module_names
from ensembles.registry import create_member
from ensembles.types import Box, Detection
from ensembles.demo_arch.paligemma import QUANTIZABLE_TEXT
from screen.cli import cli
from screen.errors import ScreenError
from screen.commands.train import TrainFailedError, run_train, train_cmd
from train.train_config import config_from_dict
from train.engine import fit
from train.errors import RecipeError
from train.recipes import get_recipe, recipe_names
from train.recipes.paligemma import build_task, choose_prompt
from train.recipes.paligemma_model import trainable_siglip_layers

TINY = {"image_size": 32, "patch": 8, "siglip_hidden": 32, "siglip_layers": 3,
        "text_hidden": 32, "text_layers": 1}
CLS_PROMPT = "Is there a fracture in this x-ray?"


def _write_split(root: Path, split: str, count: int, rng: np.random.Generator, size: int = 48) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    files: dict[str, list[dict[str, Any]]] = {"classifier": [], "detector": [], "boxes": []}
    for i in range(count):
        uid = f"1.2.{split}.{i}"
        image = rng.uniform(0.2, 0.4, (size, size)).astype(np.float32)
        boxes: list[list[float]] = []
        if i % 2 == 0:
            x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
            w, h = (int(v) for v in rng.integers(8, size // 2, 2))
            image[y0 : y0 + h, x0 : x0 + w] = 0.95
            boxes = [[x0 / size, y0 / size, (x0 + w) / size, (y0 + h) / size]]
        cv2.imwrite(str(root / "images" / f"{uid}.png"), np.round(image * 65535).astype(np.uint16))
        ids = {"study_instance_uid": f"s.{split}.{i // 4}", "sop_instance_uid": uid,
               "patient_key": f"p{i // 4}", "rows": size, "cols": size,
               "label": "fracture" if boxes else "normal", "boxes": boxes}
        path = f"images/{uid}.png"
        files["classifier"].append({"image": path, "prefix": CLS_PROMPT,
                                    "suffix": "Fracture" if boxes else "Normal", **ids})
        suffix = format_detections([Detection(Box(*b)) for b in boxes]) if boxes else "Normal"
        files["detector"].append({"image": path, "prefix": "Detect Fracture", "suffix": suffix, **ids})
        files["boxes"].append({"image": path, **ids, "labels": ["fracture"] * len(boxes),
                               "boxes_px": [[v * size for v in b] for b in boxes]})
    for kind, records in files.items():
        (root / split / f"{kind}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    _write_split(root, "train", 8, rng)
    _write_split(root, "val", 8, rng)
    return root


def _config(data: Path, out: Path, recipe: str, *, paligemma: dict[str, Any] | None = None,
            loss: dict[str, Any] | None = None, **train: Any) -> Any:
    return config_from_dict({
        "data": str(data), "out": str(out), "device": "cpu", "seed": 0,
        "train": {"batch_size": 4, "grad_accum": 1, "epochs": 1, "max_steps": 2, "progress": "off",
                  "patience": 0, **train},
        "optim": {"lr": 1e-3, "warmup_steps": 0},
        "loss": loss or {},
        "paligemma": {"tiny": TINY, "siglip_unfreeze": 1, **(paligemma or {})},
    }, recipe=recipe)


def _probe_images(data: Path) -> list[np.ndarray]:
    return [cv2.imread(str(data / "images" / f"1.2.val.{i}.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 65535
            for i in range(2)]


def test_recipe_registry_lists_every_member() -> None:
    assert {"classifier", "detector", "detr", "refiner"} <= set(recipe_names())
    with pytest.raises(RecipeError, match="unknown training recipe 'segmenter'"):
        get_recipe("segmenter")


def test_classifier_two_steps_writes_a_member_the_screener_loads(data_dir: Path, tmp_path: Path) -> None:
    config = _config(data_dir, tmp_path / "run", "classifier")
    task = build_task("classifier", config)
    result = fit(task, config)
    assert result.global_step == 2 and result.best_dir == tmp_path / "run" / "best"
    row = result.history[0]
    assert {"f1", "auc", "val_loss", "train_token_loss", "train_decision_loss"} <= set(row)
    member = create_member("paligemma-classifier", result.best_dir)
    assert member.spec.prompt == CLS_PROMPT and member.spec.labels == ("Fracture", "Normal")
    images = _probe_images(data_dir)
    loaded = [o.score for o in member.predict(images)]
    trained = [o.score for o in task.member().predict(images)]
    assert loaded == pytest.approx(trained, abs=1e-5)


def test_detector_two_steps_with_every_loss_switch(data_dir: Path, tmp_path: Path) -> None:
    config = _config(
        data_dir, tmp_path / "run", "detector",
        paligemma={"eval_boxes": True, "task_head": 4},
        loss={"decision": "focal", "ciou_weight": 1.0, "loc_sigma": 2.0, "patch_aux_weight": 1.0,
              "patch_box_weight": 1.0},
    )
    best = get_recipe("detector")(config)
    metrics = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    values = dict(zip(header, metrics[1].split(",")))
    for column in ("train_ciou_loss", "train_patch_loss", "train_patch_box_loss", "train_decision_loss",
                   "train_token_loss"):
        assert np.isfinite(float(values[column])), column
    assert "box_recall" in header and "auc_box" in header
    if values["auc"] not in ("", "nan") and values["box_recall"] not in ("", "nan"):
        assert float(values["auc_box"]) == pytest.approx((float(values["auc"]) + float(values["box_recall"])) / 2)
    member = create_member("paligemma-detector", best)
    assert member.spec.options["task_head"] == {"num_queries": 4}
    out = member.predict(_probe_images(data_dir))
    assert len(out) == 2 and all(0.0 <= o.score <= 1.0 for o in out)


def test_box_ramp_scales_the_token_and_ciou_parts_by_the_step(data_dir: Path, tmp_path: Path) -> None:
    """``[loss] box_ramp_steps``: at step 0 the detector's total is the decision and patch parts
    plus ``box_ramp_from`` times the token and CIoU parts; after the ramp, all of them. In eval
    mode (validation's val_loss) the weights are full whatever the step."""
    loss = {"ciou_weight": 1.0, "decision_weight": 2.0, "box_ramp_steps": 10, "box_ramp_from": 0.25}
    task = build_task("detector", _config(data_dir, tmp_path / "run", "detector", loss=loss))
    batch = next(iter(task.train_batches(torch.Generator().manual_seed(0))))
    totals = {}
    for mode, step in (("train", 0), ("train", 10), ("eval", 0)):
        task.model.train(mode == "train")  # the tiny model has no dropout: the same parts
        task.set_step(step, 20)
        with torch.no_grad():
            out = task.training_loss(batch)
        totals[mode, step] = float(out.total)
    parts = out.parts
    boxes = parts["token_loss"] + parts["ciou_loss"]
    rest = 2.0 * parts["decision_loss"]
    assert totals["train", 10] == pytest.approx(rest + boxes, rel=1e-5)
    assert totals["train", 0] == pytest.approx(rest + 0.25 * boxes, rel=1e-5)
    assert totals["eval", 0] == pytest.approx(rest + boxes, rel=1e-5)


def test_overfit_the_classifier_loss_falls(data_dir: Path, tmp_path: Path) -> None:
    config = _config(data_dir, tmp_path / "run", "classifier", epochs=6, max_steps=0, eval_every=6,
                     paligemma={"siglip_unfreeze": -1})
    config = config.replace(optim=config.optim.replace(lr=2e-2))  # configs are frozen
    result = fit(build_task("classifier", config), config)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.6 * losses[0]
    assert losses == sorted(losses, reverse=True)  # falls every epoch


@pytest.mark.parametrize("unfreeze, layers", [(0, []), (2, [1, 2]), (5, [0, 1, 2]), (-1, [0, 1, 2])],
                         ids=["frozen", "last-2", "more-than-there-are", "all"])
def test_unfreeze_n_leaves_exactly_the_last_n_siglip_layers_trainable(
    data_dir: Path, tmp_path: Path, unfreeze: int, layers: list[int]
) -> None:
    task = build_task("classifier", _config(data_dir, tmp_path, "classifier",
                                            paligemma={"siglip_unfreeze": unfreeze}))
    model = task.built.model
    assert trainable_siglip_layers(model) == layers
    vision = model.model.vision_tower
    assert all(p.requires_grad == (unfreeze == -1) for p in vision.embeddings.parameters())
    assert all(p.requires_grad == (unfreeze != 0) for p in vision.post_layernorm.parameters())
    for module in (model.model.language_model, model.model.multi_modal_projector, model.lm_head):
        assert all(p.requires_grad for p in module.parameters())


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_qlora_touches_only_the_language_model(data_dir: Path, tmp_path: Path, bits: str) -> None:
    config = _config(data_dir, tmp_path / "run", "classifier",
                     paligemma={"method": "qlora", "quantization": bits, "siglip_unfreeze": 2,
                                "tiny": {**TINY, **QUANTIZABLE_TEXT}})
    task = build_task("classifier", config)
    trainable = [n for n, p in task.built.model.named_parameters() if p.requires_grad]
    lora = [n for n in trainable if "lora_" in n]
    assert lora and all(re.search(r"language_model\..*\.(q|k|v|o)_proj\.lora_[AB]\.", n) for n in lora)
    others = [n for n in trainable if "lora_" not in n]
    assert others and all("modules_to_save" in n for n in others)
    assert all("multi_modal_projector" in n or re.search(r"vision_tower\.(encoder\.layers\.[12]|post_layernorm)\.", n)
               for n in others)
    assert trainable_siglip_layers(task.built.model) == [1, 2]
    quantized = quantized_module_names(task.built.model)
    assert quantized and all("language_model" in n for n in quantized)
    result = fit(task, config)
    assert result.global_step == 2 and (result.best_dir / "adapter_config.json").is_file()
    spec = json.loads((result.best_dir / "member.json").read_text())
    assert Path(spec["options"]["base"]) == (tmp_path / "run" / "base").resolve()
    member = create_member("paligemma-classifier", result.best_dir)
    assert 0.0 <= member.predict(_probe_images(data_dir))[0].score <= 1.0


def test_resumed_paligemma_run_continues_where_it_stopped(data_dir: Path, tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"max_steps": 0, "loss": {"patch_aux_weight": 1.0, "patch_box_weight": 1.0}}
    straight = _config(data_dir, tmp_path / "a", "classifier", epochs=2, **kwargs)
    fit(build_task("classifier", straight), straight)
    interrupted = _config(data_dir, tmp_path / "b", "classifier", epochs=2, **kwargs)
    task = build_task("classifier", interrupted)
    passes = task.train_batches
    calls = []

    def killed_in_epoch_2(generator: torch.Generator) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return passes(generator)

    task.train_batches = killed_in_epoch_2  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        fit(task, interrupted)
    result = fit(build_task("classifier", interrupted), interrupted)  # a fresh process
    assert result.epochs_run == 1 and len(result.history) == 2
    a = load_file(str(tmp_path / "a" / "last" / "weights.safetensors"))
    b = load_file(str(tmp_path / "b" / "last" / "weights.safetensors"))
    assert set(a) == set(b) and any(k.startswith("patch_head.") for k in a)
    assert any(k.startswith("patch_box_head.") for k in a)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_one_prompt_per_run() -> None:
    records = [{"prefix": "Detect Fracture"}] * 3 + [{"prefix": CLS_PROMPT}]
    with pytest.warns(UserWarning, match="mixing prompts in one run hurts both tasks"):
        assert choose_prompt(records, "") == "Detect Fracture"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_prompt(records[:3], "") == "Detect Fracture"
    with pytest.raises(RecipeError, match="'caption' is not in the training JSONL"):
        choose_prompt(records, "caption")


def test_screen_train_command(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "cls.toml"
    path.write_text(
        f'recipe = "classifier"\ndata = "{data_dir}"\nout = "{tmp_path / "unused"}"\ndevice = "cpu"\n'
        '[train]\nbatch_size = 4\ngrad_accum = 1\nepochs = 1\nprogress = "off"\n'
        f"[paligemma]\ntiny = {{ image_size = 32, patch = 8, siglip_hidden = 32, siglip_layers = 2, "
        "text_hidden = 32, text_layers = 1 }\n"
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(train_cmd, ["classifier", "--config", str(path), "--out", str(out),
                                            "--set", "train.max_steps=1"])
    assert result.exit_code == 0, result.output
    assert f"best checkpoint: {out / 'best'}" in result.output
    assert json.loads((out / "config.json").read_text())["train"]["max_steps"] == 1
    with pytest.raises(TrainFailedError, match="run `screen train classifier`") as info:
        run_train("detector", path)
    assert isinstance(info.value, ScreenError)
    bad = CliRunner().invoke(train_cmd, ["classifier", "--config", str(path), "--set", "train.epochs=0"])
    assert bad.exit_code != 0 and "[train] epochs must be >= 1" in str(bad.exception)


def test_qlora_4bit_on_widths_the_kernels_refuse_is_an_error_line(data_dir: Path, tmp_path: Path) -> None:
    """A tiny model 32 wide cannot be quantised in 4-bit on any machine: exit 2, no traceback."""
    path = tmp_path / "cls.toml"
    path.write_text(
        f'recipe = "classifier"\ndata = "{data_dir}"\nout = "{tmp_path / "run"}"\ndevice = "cpu"\n'
        '[train]\nbatch_size = 4\ngrad_accum = 1\nepochs = 1\nmax_steps = 1\nprogress = "off"\n'
        '[paligemma]\nmethod = "qlora"\nquantization = "4bit"\n'
        "tiny = { image_size = 32, patch = 8, siglip_hidden = 32, siglip_layers = 2, "
        "text_hidden = 32, text_layers = 1 }\n"
    )
    result = CliRunner().invoke(cli, ["train", "classifier", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1].startswith("Error: cannot load checkpoint ")
    assert "in 4bit: bitsandbytes' 4bit kernels need every quantised layer's input and output " \
           "widths to be multiples of 128" in result.output
    assert "Traceback" not in result.output


def test_reading_order_writes_boxes_top_to_bottom_then_left_to_right() -> None:
    from ensembles.loc_tokens import parse_detections
    from train.recipes.paligemma import ordered_item, reading_order

    low, high, left = [0.1, 0.6, 0.3, 0.8], [0.5, 0.1, 0.7, 0.3], [0.05, 0.6, 0.2, 0.7]
    ordered = reading_order(torch.tensor([low, high, left]))
    assert torch.allclose(ordered, torch.tensor([high, left, low]))  # same top: the left one first
    assert reading_order(torch.zeros((0, 4))).shape == (0, 4)
    item = {"pixel_values": torch.zeros((3, 8, 8)), "boxes": torch.tensor([low, high]), "suffix": "old"}
    out = ordered_item(item, "Fracture")
    tops = [d.to_detection(1.0).box.y0 for d in parse_detections(out["suffix"])]
    assert tops == sorted(tops) and len(tops) == 2
    assert torch.allclose(out["boxes"], torch.tensor([high, low])) and item["suffix"] == "old"


def test_box_order_reading_reorders_training_answers(data_dir: Path, tmp_path: Path) -> None:
    """``[paligemma] box_order = "reading"`` reaches a detector's training set: an item whose
    boxes come bottom first is served top first (after augmentation); ``as-prepared`` keeps
    the order."""
    from ensembles.loc_tokens import parse_detections

    two = torch.tensor([[0.1, 0.6, 0.3, 0.8], [0.5, 0.1, 0.7, 0.3]])  # bottom one first
    for order, want_sorted in (("reading", True), ("as-prepared", False)):
        config = _config(data_dir, tmp_path / order, "detector", paligemma={"box_order": order})
        dataset = build_task("detector", config).train_set
        item = dataset[0]
        dataset.cache[0] = dict(item, boxes=two, suffix="stale")
        served = dataset[0]
        tops = [d.to_detection(1.0).box.y0 for d in parse_detections(served["suffix"])] \
            if served["suffix"] != "stale" else []
        assert (tops == sorted(tops) and len(tops) == 2) is want_sorted, order


def test_augmentation_moves_pixels_and_boxes_together() -> None:
    from ensembles.loc_tokens import parse_detections
    from train.recipes.paligemma import augment_item

    pixels = torch.zeros((3, 32, 32))
    pixels[:, 4:12, 20:30] = 1.0  # rows 4..11, cols 20..29
    item = {"pixel_values": pixels, "boxes": torch.tensor([[20 / 32, 4 / 32, 30 / 32, 12 / 32]]),
            "suffix": "old"}
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        out = augment_item(item, "Fracture")
        x0, y0, x1, y1 = (round(v * 32) for v in out["boxes"][0].tolist())
        assert float(out["pixel_values"][:, y0:y1, x0:x1].mean()) == 1.0
        assert float(out["pixel_values"].sum()) == float(pixels.sum())
        parsed = parse_detections(out["suffix"])
        assert len(parsed) == 1
        box = parsed[0].to_detection(1.0).box
        assert box.iou(Box(*out["boxes"][0].tolist())) > 0.9
        seen.add((x0, y0, x1, y1))
    assert len(seen) == 8  # all symmetries of the square occur
    torch.manual_seed(0)
    assert augment_item(item, None)["suffix"] == "old"


def test_appearance_re_renders_training_items_and_rewrites_their_answers(data_dir: Path, tmp_path: Path) -> None:
    """``[appearance]`` reaches a detector's training set: each use of an item is drawn anew
    (zoomed, so its boxes move and its loc-token answer follows them); validation items are
    the images as inference sees them; a short run trains on it."""
    from ensembles.preprocess import preprocess_image

    config = _config(data_dir, tmp_path / "run", "detector")
    config = config.model_copy(update={"appearance": config.appearance.model_copy(
        update={"zoom": (1.5, 2.5), "gamma": (0.7, 1.4)})})
    task = build_task("detector", config)
    train_set, val_set = task.train_set, task.val_set
    assert train_set.appearance is not None and val_set.appearance is None
    torch.manual_seed(0)
    first, second = train_set[0], train_set[0]  # record 0 has a box
    assert not torch.equal(first["pixel_values"], second["pixel_values"])
    for item in (first, second):
        parsed = [d.to_detection(1.0).box for d in parse_detections(item["suffix"])]
        assert len(parsed) == len(item["boxes"]) == 1
        assert parsed[0].iou(Box(*item["boxes"][0].tolist())) > 0.9
    original = train_set.inner[0]["boxes"][0]
    zoomed = first["boxes"][0]
    assert float(zoomed[2] - zoomed[0]) > 1.4 * float(original[2] - original[0])
    image = cv2.imread(str(data_dir / val_set.inner.records[0]["image"]), cv2.IMREAD_UNCHANGED)
    expected = preprocess_image(image.astype(np.float32) / 65535, task.preprocess)
    assert torch.allclose(val_set[0]["pixel_values"], torch.from_numpy(expected))
    assert fit(task, config).global_step == 2
