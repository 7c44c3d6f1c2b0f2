"""``screen models``: member kinds, whether they run here, and the site config's checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ensembles import registry
from screen.cli import cli


def test_lists_kinds_and_site_members(site: Path) -> None:
    result = CliRunner().invoke(cli, ["models", "--config", str(site)])
    assert result.exit_code == 0, result.output
    for kind in ("paligemma-classifier", "paligemma-detector", "detr", "refiner"):
        assert any(line.startswith(kind) and " yes " in line for line in result.output.splitlines())
    assert "  pg-cls " in result.output and "  detr " in result.output


def test_missing_requirement_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    real = registry.importlib.util.find_spec

    def fake_find_spec(name: str, *args: object):  # type: ignore[no-untyped-def]
        return None if name == "timm" else real(name, *args)

    monkeypatch.setattr(registry.importlib.util, "find_spec", fake_find_spec)
    monkeypatch.setattr("screen.models_cmd._default_exists", lambda: False)
    result = CliRunner().invoke(cli, ["models"])
    (detr_line,) = [line for line in result.output.splitlines() if line.startswith("detr ")]
    assert " no " in detr_line and "missing: timm" in detr_line
