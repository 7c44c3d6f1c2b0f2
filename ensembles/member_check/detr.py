"""What the ``detr`` member relies on, checked on a checkpoint folder before loading it.

- ``member.json``: kind ``detr``; an input size DETR's stride-32 backbone can take (>= 32).
- ``files``: ``config.json`` and safetensors weights (never pickles).
- ``config``: a DETR config whose classes are ``member.json``'s labels, one at least naming a
  fracture: the member scores every class as a fracture, so a detector of other things (a
  COCO DETR) would flag every radiograph with a bone in it.
- ``weights``: every tensor's shape fits the model the config describes (headers only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ensembles.checkpoint import MemberSpec
from ensembles.types import MemberKind
from ensembles.errors import CheckpointError
from ensembles.member_check.files import check_weight_files, tensor_headers
from ensembles.member_check.report import CheckReport
from ensembles.member_check.weights import weight_fit

MIN_IMAGE_SIZE = 32


def check_detr(directory: str | Path, spec: MemberSpec) -> CheckReport:
    """Run every check on a DETR member checkpoint (``spec``: its ``member.json``); problems
    are failed checks, never raised."""
    folder = Path(directory)
    report = CheckReport(folder, MemberKind.DETR.value)
    if not report.expect("member.json", spec.kind == MemberKind.DETR and spec.image_size >= MIN_IMAGE_SIZE,
                         f"detr, {spec.image_size} px {spec.resize}, intended use {spec.intended_use}",
                         f"kind {spec.kind!r}, image_size {spec.image_size}: needs kind 'detr' and "
                         f"image_size >= {MIN_IMAGE_SIZE}"):
        return report
    shards = check_weight_files(report, folder)
    if shards is None:
        return report
    config = _config(report, folder, spec)
    if config is None:
        return report
    from transformers import DetrForObjectDetection

    with torch.device("meta"):
        model = DetrForObjectDetection(config)
    try:
        fit = weight_fit(model, tensor_headers(shards))
    except CheckpointError as exc:
        report.failed("weights", str(exc))
        return report
    if fit.skipped:
        report.skipped("weights", fit.skipped)
    else:
        report.expect("weights", fit.ok, "every tensor fits the config",
                      f"weights do not fit the config: {fit.describe()}")
    return report


def _config(report: CheckReport, folder: Path, spec: MemberSpec) -> Any:
    from transformers import DetrConfig

    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if raw.get("model_type") != "detr":
            report.failed("config", f"config.json model_type is {raw.get('model_type')!r}, not 'detr'")
            return None
        config = DetrConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        report.failed("config", f"config.json does not read as a DETR config: {exc}")
        return None
    id2label = {int(k): str(v) for k, v in dict(config.id2label or {}).items()}
    classes = [id2label[i] for i in sorted(id2label)]
    if len(classes) != len(spec.labels):
        report.failed("config", f"the model has {len(classes)} classes {classes[:5]} but "
                                f"member.json lists labels {list(spec.labels)}")
        return None
    if not any("fracture" in label.lower() for label in spec.labels):
        report.failed("config", f"no class names a fracture (labels {list(spec.labels)[:5]}): the "
                                "member scores every class as a fracture; import a detector "
                                "trained on fractures, or name its classes with --labels")
        return None
    report.passed("config", f"{len(classes)} class(es) {list(spec.labels)}")
    return config
