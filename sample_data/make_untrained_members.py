"""Write UNTRAINED (random-init) demo members, site.toml and op.json into sample_data/.

    python sample_data/make_untrained_members.py

They have the three real architectures (tiny PaliGemma classifier, tiny PaliGemma detector,
tiny DETR with a regnetx_002 backbone), seeded, so that ``screen run sample_data/archive``
exercises the whole pipeline on a fresh install. Their scores carry no information: they
are placeholders until the trained demo members (``python -m screen.demo_cmd``) replace them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ensembles.tiny import write_tiny_paligemma_checkpoint
from ensembles.tiny_detr import write_tiny_detr_checkpoint

HERE = Path(__file__).resolve().parent

SITE = """\
# The embedded default of `screen run` (no --config): UNTRAINED placeholder members, see
# sample_data/README.md. Run: screen run sample_data/archive --out screen-out
operating_point = "op.json"

[run]
device = "cpu"
workers = 2
batch_size = 8

[members.pg-cls]
kind = "paligemma-classifier"
checkpoint = "models/pg-cls"

[members.pg-det]
kind = "paligemma-detector"
checkpoint = "models/pg-det"

[members.detr]
kind = "detr"
checkpoint = "models/detr"

[output]
patient_id = "hash"
"""

OPERATING_POINT = {
    "schema_version": 1,
    "level": "high-sensitivity",
    "thresholds": {"pg-cls": 0.5, "pg-det": 0.5, "detr": 0.5},
    "vote": {"rule": "any"},
    "boxes": {"score_threshold": 0.05, "iou_threshold": 0.55, "scoring": "max", "skip_box_threshold": 0.0,
              "members": ["pg-det", "detr"], "weights": None},
    "provenance": {"notes": "placeholder thresholds for untrained demo members; not tuned (screen tune writes real ones)"},
}


def main() -> None:
    models = HERE / "models"
    shutil.rmtree(models, ignore_errors=True)
    write_tiny_paligemma_checkpoint(models / "pg-cls", "paligemma-classifier", name="pg-cls", seed=1)
    write_tiny_paligemma_checkpoint(models / "pg-det", "paligemma-detector", name="pg-det", seed=2, threshold=0.5)
    write_tiny_detr_checkpoint(models / "detr", name="detr", backbone="regnetx_002", seed=3)
    (HERE / "site.toml").write_text(SITE, encoding="utf-8")
    (HERE / "op.json").write_text(json.dumps(OPERATING_POINT, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    size = sum(p.stat().st_size for p in models.rglob("*") if p.is_file())
    print(f"wrote untrained members to {models} ({size / 1e6:.1f} MB), site.toml and op.json")


if __name__ == "__main__":
    main()
