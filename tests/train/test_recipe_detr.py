"""The DETR recipe: trainable BatchNorm, augmentation geometry, losses, checkpoints, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from dicom_io.phantom import MAX_VALUE, generate_image
from ensembles.registry import create_member
from train.train_config import config_from_dict
from train.engine import fit
from train.errors import RecipeError, TrainConfigError
from train.recipes import get_recipe
from train.recipes.box_data import dihedral
from train.recipes.detr import DetrSection, build_task
from train.recipes.detr_model import thaw_batchnorm

TINY_DETR = {
    "backbone": "test_resnet", "feature_level": 3, "num_queries": 4, "d_model": 32,
    "encoder_layers": 1, "decoder_layers": 1, "ffn_dim": 64, "attention_heads": 2,
    "image_size": 64, "heatmap_weight": 1.0, "heatmap_pos_weight": 4.0,
}


def _write_split(root: Path, split: str, seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        positive = i % 2 == 0
        image = generate_image(rng, positive=positive, shape=(96, 128) if i % 3 else (128, 96))
        uid = f"1.2.{seed}.{i}"
        pixels = np.rint(image.pixels.astype(np.float64) / MAX_VALUE * 65535).astype(np.uint16)
        (root / "images").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / f"{uid}.png"), pixels)
        rows, cols = image.pixels.shape
        boxes_px = [list(map(float, b)) for b in image.boxes]
        records.append({
            "image": f"images/{uid}.png", "rows": rows, "cols": cols,
            "boxes": [[b[0] / cols, b[1] / rows, b[2] / cols, b[3] / rows] for b in boxes_px],
            "boxes_px": boxes_px, "labels": ["fracture"] * len(boxes_px),
            "label": "fracture" if positive else "normal",
            "study_instance_uid": f"study-{seed}-{i // 2}", "sop_instance_uid": uid,
            "patient_key": f"p{seed}-{i // 2}",
        })
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / split / "boxes.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8"
    )


@pytest.fixture(scope="module")
def box_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared-data folder with phantom images: 8 training and 4 validation images."""
    root = tmp_path_factory.mktemp("detr-data")
    _write_split(root, "train", 1, 8)
    _write_split(root, "val", 2, 4)
    return root


def _config(data: Path, out: Path, **train: Any) -> Any:
    loop = {"batch_size": 4, "grad_accum": 1, "epochs": 1, "progress": "off", "resume": False,
            "threads": 1, "eval_batch_size": 4, "patience": 0, "monitor": "f1"}
    loop.update(train)
    return config_from_dict({
        "data": str(data), "out": str(out), "recipe": "detr", "device": "cpu", "seed": 3,
        "train": loop, "optim": {"lr": 1e-3, "warmup_steps": 0, "schedule": "constant"},
        "detr": dict(TINY_DETR),
    })


def test_thaw_batchnorm_puts_back_trainable_batchnorm_with_the_same_statistics() -> None:
    from transformers.models.detr.modeling_detr import DetrFrozenBatchNorm2d

    frozen = torch.nn.Sequential(DetrFrozenBatchNorm2d(3), torch.nn.Sequential(DetrFrozenBatchNorm2d(2)))
    frozen[0].running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
    frozen[0].weight.copy_(torch.tensor([2.0, 2.0, 2.0]))
    x = torch.randn(2, 3, 4, 4)
    expected = frozen[0](x)
    assert thaw_batchnorm(frozen) == 2
    assert isinstance(frozen[0], torch.nn.BatchNorm2d) and isinstance(frozen[1][0], torch.nn.BatchNorm2d)
    assert frozen[0].weight.requires_grad
    torch.testing.assert_close(frozen.eval()[0](x), expected)


def test_from_scratch_task_trains_every_backbone_layer(box_data: Path, tmp_path: Path) -> None:
    from transformers.models.detr.modeling_detr import DetrFrozenBatchNorm2d

    task = build_task(_config(box_data, tmp_path / "run"))
    backbone = task.detr.model.backbone
    assert not any(isinstance(m, DetrFrozenBatchNorm2d) for m in backbone.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    assert all(p.requires_grad for p in backbone.parameters())
    groups = task.param_groups(_config(box_data, tmp_path).optim)
    counted = sum(len(g["params"]) for g in groups)
    assert counted == sum(1 for p in task.model.parameters() if p.requires_grad)


@pytest.mark.parametrize("code", range(8))
def test_dihedral_moves_boxes_with_the_image(code: int) -> None:
    grey = np.zeros((40, 40), dtype=np.float32)
    grey[6:14, 20:34] = 1.0  # rows 6..13, columns 20..33
    box = np.array([[20 / 40, 6 / 40, 34 / 40, 14 / 40]], dtype=np.float32)
    draws = [0.0 if code & bit else 0.9 for bit in (1, 2, 4)]
    out, moved = dihedral(grey, box, draws)
    rows, cols = np.nonzero(out)
    found = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]) / 40
    np.testing.assert_allclose(moved[0], found, atol=1e-6)


def test_training_steps_write_a_member_the_screener_loads(box_data: Path, tmp_path: Path) -> None:
    config = _config(box_data, tmp_path / "run", max_steps=2)
    best = get_recipe("detr")(config)
    for name in ("metrics.csv", "loss.png", "f1.png", "config.json"):
        assert (tmp_path / "run" / name).is_file()
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ("train_loss_ce", "train_heatmap_loss", "f1", "study_auc", "map", "box_recall",
                   "auc_box"):
        assert column in header
    spec = json.loads((best / "member.json").read_text())
    assert spec["kind"] == "detr" and spec["resize"] == "letterbox" and spec["image_size"] == 64
    member = create_member("detr", best)
    rng = np.random.default_rng(0)
    image = (generate_image(rng, positive=True, shape=(96, 128)).pixels / MAX_VALUE).astype(np.float32)
    out = member.predict([image])[0]
    assert 0.0 <= out.score <= 1.0 and out.extras["queries"] == 4
    # The saved (frozen-BatchNorm) model answers exactly as the trained one does in eval mode.
    task = build_task(_config(box_data, tmp_path / "other"))
    task.detr.load_state_dict(
        {k: v for k, v in member.model.state_dict().items()}, strict=False)
    task.model.eval()
    from ensembles.preprocess import preprocess_batch

    pixels = torch.from_numpy(preprocess_batch([image], task.preprocess))
    with torch.inference_mode():
        logits = task.detr(pixel_values=pixels).logits
        loaded = member.model(pixel_values=pixels).logits
    torch.testing.assert_close(logits, loaded, atol=1e-5, rtol=1e-4)


def test_a_small_overfit_lowers_the_loss(box_data: Path, tmp_path: Path) -> None:
    config = _config(box_data, tmp_path / "run", epochs=5, epoch_steps=20)
    config.sections["detr"]["augment"] = False
    result = fit(build_task(config), config)
    losses = [row["train_loss"] for row in result.history]
    assert len(losses) == 5 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0]
    heat = [row["train_heatmap_loss"] for row in result.history]
    assert heat[-1] < heat[0]


def test_validation_reports_member_style_metrics(box_data: Path, tmp_path: Path) -> None:
    task = build_task(_config(box_data, tmp_path / "run"))
    task.model.eval()
    with torch.inference_mode():
        metrics = task.evaluate()
    for key in ("f1", "precision", "recall", "accuracy", "auc", "study_auc", "val_loss", "map",
                "map_50", "f1_50", "box_recall", "box_recall_any", "auc_box", "mean_score"):
        assert key in metrics
    assert 0.0 <= metrics["mean_score"] <= 1.0 and metrics["val_loss"] > 0
    assert 0.0 <= metrics["auc"] <= 1.0
    assert metrics["auc_box"] == pytest.approx((metrics["auc"] + metrics["box_recall_any"]) / 2)


def test_resumed_run_continues_where_it_stopped(box_data: Path, tmp_path: Path) -> None:
    first = fit(build_task(_config(box_data, tmp_path / "run", epochs=1, epoch_steps=2, resume=True)),
                _config(box_data, tmp_path / "run", epochs=1, epoch_steps=2, resume=True))
    assert first.global_step == 2
    config = _config(box_data, tmp_path / "run", epochs=2, epoch_steps=2, resume=True)
    resumed = fit(build_task(config), config)
    assert resumed.global_step == 4 and resumed.epochs_run == 1
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    straight_config = _config(box_data, tmp_path / "straight", epochs=2, epoch_steps=2)
    straight = fit(build_task(straight_config), straight_config)
    assert straight.history[-1]["train_loss"] == pytest.approx(resumed.history[-1]["train_loss"], rel=1e-4)


def test_detr_section_refuses_bad_values() -> None:
    with pytest.raises(TrainConfigError, match=r"\[detr\] threshold must be in \[0, 1\], got 1.5"):
        DetrSection(threshold=1.5)
    with pytest.raises(TrainConfigError, match="unknown key"):
        _config(Path("d"), Path("o")).section("detr", DetrSection) and config_from_dict(
            {"data": "d", "out": "o", "detr": {"queries": 3}}).section("detr", DetrSection)


def test_missing_training_data_says_to_run_prepare(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="screen prepare"):
        build_task(_config(tmp_path / "nothing", tmp_path / "run"))


def test_aux_warmup_trains_the_backbone_alone_then_everything(box_data: Path, tmp_path: Path) -> None:
    config = _config(box_data, tmp_path / "run", grad_accum=2)
    config.sections["detr"].update(aux_warmup_steps=1, position_weight=1.0)
    task = build_task(config)
    batch = next(iter(task.train_batches(torch.Generator().manual_seed(0))))

    def grads_after_one_micro_batch() -> tuple[bool, bool, set[str]]:
        task.model.zero_grad(set_to_none=True)
        loss = task.training_loss(batch)
        loss.total.backward()
        backbone = any(p.grad is not None for p in task.detr.model.backbone.parameters())
        decoder = any(p.grad is not None for p in task.detr.model.decoder.parameters())
        return backbone, decoder, set(loss.parts)

    # one optimizer step of warm-up = grad_accum (2) micro-batches: the backbone learns alone
    for _ in range(2):
        backbone, decoder, parts = grads_after_one_micro_batch()
        assert backbone and not decoder and parts == {"heatmap_loss", "position_loss"}
    backbone, decoder, parts = grads_after_one_micro_batch()
    assert backbone and decoder and {"loss_ce", "loss_giou", "heatmap_loss"} <= parts
    assert float(task.progress.count) == 3
    assert "progress.count" in task.model.state_dict()  # saved with last/, so resume knows


def test_aux_warmup_needs_an_auxiliary_loss() -> None:
    with pytest.raises(TrainConfigError, match="aux_warmup_steps needs an auxiliary loss"):
        DetrSection(aux_warmup_steps=10)


def test_heatmap_can_read_a_finer_feature_map(box_data: Path, tmp_path: Path) -> None:
    config = _config(box_data, tmp_path / "run")
    config.sections["detr"].update(feature_level=3, heatmap_feature=-2)
    task = build_task(config)
    batch = next(iter(task.train_batches(torch.Generator().manual_seed(0))))
    assert task.head is not None and task.head.conv.in_channels == 48  # test_resnet's stride-8 map
    assert "heatmap_loss" in task.training_loss(batch).parts
    config.sections["detr"].update(heatmap_feature=-9)
    with pytest.raises(RecipeError, match="heatmap_feature -9 is not one of the backbone's 3"):
        build_task(config)


def test_one_detr_builder_builds_the_demo_and_the_recipe_model(box_data: Path, tmp_path: Path) -> None:
    import ensembles.demo_arch.detr as demo
    import train.recipes.detr as recipe
    from ensembles.detr_arch import DetrArchitecture, build_detr

    # the [detr] table's architecture fields are DetrArchitecture's, declared there only
    assert issubclass(DetrSection, DetrArchitecture)
    assert set(DetrArchitecture.model_fields) <= set(DetrSection.model_fields)
    assert not set(DetrSection.__annotations__) & set(DetrArchitecture.model_fields)
    assert demo.build_detr is build_detr and recipe.build_detr is build_detr
    # the demo's tiny DETR and the recipe's model of the same architecture and seed are the same
    arch = {"backbone": "test_resnet", "num_queries": 4, "d_model": 32, "encoder_layers": 1,
            "decoder_layers": 1, "ffn_dim": 64, "attention_heads": 2}
    config = config_from_dict({"data": str(box_data), "out": str(tmp_path / "run"), "seed": 3,
                               "device": "cpu", "detr": {**arch, "image_size": 64,
                                                         "train_batchnorm": False}})
    section = config.section("detr", DetrSection)
    assert section.architecture() == DetrArchitecture(**arch)
    trained = build_task(config).detr
    tiny = demo.build_tiny_detr("test_resnet", num_queries=4, d_model=32, seed=3)
    assert type(trained) is type(tiny)
    expected = tiny.state_dict()
    got = trained.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[key], expected[key]) for key in expected)


def test_appearance_re_renders_training_batches_only(box_data: Path, tmp_path: Path) -> None:
    """``[appearance]`` reaches DETR's training batches (each draw anew, boxes zoomed with the
    image, classes kept); the cached squares, and so validation, are the images as inference
    sees them; a short run trains on it."""
    config = _config(box_data, tmp_path / "run", max_steps=2)
    config = config.model_copy(update={"appearance": config.appearance.model_copy(
        update={"zoom": (1.5, 2.0), "noise": (0.01, 0.02)})})
    task = build_task(config)
    assert task.train_set.appearance is not None and task.val_set.appearance is None
    index = next(i for i in range(len(task.train_set)) if task.train_set.label(i))
    plain, plain_boxes, plain_classes = task.train_set.get(index)
    drawn = [task.train_set.get(index, np.random.default_rng(seed)) for seed in (0, 1)]
    assert not np.array_equal(drawn[0][0], drawn[1][0])
    for grey, boxes, classes in drawn:
        assert grey.shape == plain.shape and len(boxes) == len(plain_boxes) == len(classes)
        assert np.array_equal(classes, plain_classes)
        assert float((boxes[:, 2:] - boxes[:, :2]).mean()) > 1.2 * float((plain_boxes[:, 2:] - plain_boxes[:, :2]).mean())
    assert np.array_equal(task.train_set.get(index)[0], plain)  # no generator: the stored square
    assert fit(task, config).global_step == 2


def test_re_rendered_boxes_keep_their_own_classes(tmp_path: Path) -> None:
    """With two classes and a box wholly outside the image, a re-rendered square's classes are
    those of the boxes it keeps, in order, as the stored square's are."""
    from ensembles.preprocess import PreprocessConfig
    from ensembles.types import ResizeMode
    from train.appearance import AppearanceConfig, AppearanceSource
    from train.recipes.box_data import SquareCache

    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.full((60, 80), 20000, np.uint16))
    record = {"image": "images/a.png", "rows": 60, "cols": 80, "label": "fracture",
              "labels": ["fracture", "fracture", "dislocation"],
              "boxes_px": [[10, 10, 20, 20], [100, 10, 120, 20], [40, 30, 60, 50]]}
    preprocess = PreprocessConfig(image_size=32, resize=ResizeMode.LETTERBOX)
    source = AppearanceSource(tmp_path, [record], preprocess, AppearanceConfig(zoom=(1.2, 1.5)))
    cache = SquareCache(tmp_path, [record], preprocess, ("fracture", "dislocation"), appearance=source)
    _, stored_boxes, stored = cache.get(0)
    _, boxes, classes = cache.get(0, np.random.default_rng(0))
    assert stored.tolist() == classes.tolist() == [0, 1] and len(boxes) == len(stored_boxes) == 2
