"""The demo's box-member rule: a detector whose validation boxes miss the fractures does not
place boxes in the findings (it still votes)."""

from __future__ import annotations

from pathlib import Path

from ensembles.operating_point.op_json import load_deciding_point, save_operating_point
from ensembles.operating_point.point import uniform_operating_point
from screen.commands.demo import BOX_MEMBER_FLOOR, _restrict_box_members, choose_box_members

VALIDATION = {"boxes": {"pg-det": {"recall_iou_0.3": 0.0}, "detr": {"recall_iou_0.3": 0.9},
                        "detr (before refiner)": {"recall_iou_0.3": 0.2}}}


def test_only_detectors_at_or_above_the_floor_are_chosen() -> None:
    assert choose_box_members(VALIDATION, ["pg-det", "detr"]) == ["detr"]
    assert choose_box_members({"boxes": {"pg-det": {"recall_iou_0.3": BOX_MEMBER_FLOOR}}}, ["pg-det"]) == ["pg-det"]
    assert choose_box_members({"boxes": {"detr": {"recall_iou_0.3": None}}}, ["detr"]) == []
    assert choose_box_members({}, ["detr"]) == []


def test_the_tuned_point_is_rewritten_with_the_chosen_members_and_says_why(tmp_path: Path) -> None:
    path = save_operating_point(uniform_operating_point(["pg-cls", "pg-det", "detr"], 0.4), tmp_path / "op.json")
    before = load_deciding_point(path)
    _restrict_box_members(path, ["detr"], ["pg-det", "detr"])
    after = load_deciding_point(path)
    assert after.boxes.members == ("detr",)
    assert dict(after.thresholds) == dict(before.thresholds) and after.vote == before.vote
    assert after.id != before.id  # it decides differently, so it is another point
    assert "pg-det left out of box fusion" in (after.provenance.notes or "")
    # nothing to leave out, or nothing worth keeping: the file is left as it was
    text = path.read_text()
    _restrict_box_members(path, ["pg-det", "detr"], ["pg-det", "detr"])
    _restrict_box_members(path, [], ["pg-det", "detr"])
    assert path.read_text() == text
