"""``screen models``: member kinds, whether they run here, and the site config's checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    monkeypatch.setattr("screen.commands.models._default_exists", lambda: False)
    result = CliRunner().invoke(cli, ["models"])
    (detr_line,) = [line for line in result.output.splitlines() if line.startswith("detr ")]
    assert " no " in detr_line and "missing: timm" in detr_line


def test_builtin_kinds_are_described_where_they_register() -> None:
    """The static table (listing without torch) says what each module's registration says."""
    for info in registry.BUILTIN_KINDS:
        registered = registry.member_kind(info.kind)
        assert (registered.module, registered.requires, registered.description) == (
            info.module, info.requires, info.description)


def test_listing_kinds_works_without_torch(tmp_path: Path) -> None:
    """A machine without torch (or transformers, timm): the listing says what is missing."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "BLOCKED = {'torch', 'torchvision', 'transformers', 'timm', 'peft', 'bitsandbytes'}\n"
        "class NotInstalled:  # as if these were not installed: importing or finding them fails\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, NotInstalled())\n"
        "sys.argv = ['screen', 'models']\n"
        "from screen.cli import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    (cls_line,) = [line for line in lines if line.startswith("paligemma-classifier ")]
    assert " no " in cls_line and "(missing: torch, transformers)" in cls_line
    (detr_line,) = [line for line in lines if line.startswith("detr ")]
    assert "(missing: torch, transformers, timm)" in detr_line
    assert "  pg-cls " in done.stdout and " demo " in done.stdout  # the site's members, read without torch


def test_import_and_check_commands(stock: Any, tmp_path: Path) -> None:
    source = stock.stock_checkpoint(tmp_path / "src")
    out = tmp_path / "pg2-cls"
    result = CliRunner().invoke(cli, ["models", "import", str(source), "--kind", "paligemma-classifier",
                                      "--out", str(out), "--intended-use", "research",
                                      "--prompt", "Is there a fracture in this x-ray?",
                                      "--labels", "Fracture, Normal"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        f"imported {source} as paligemma-classifier 'pg2-cls' (research) into {out}")
    assert "ok   loc-tokens" in result.output
    checked = CliRunner().invoke(cli, ["models", "check", str(out)])
    assert checked.exit_code == 0, checked.output
    assert checked.output.splitlines()[-1] == f"{out}: every check passed (paligemma-classifier)"
    listed = CliRunner().invoke(cli, ["models", "check", str(out), "--kind", "detr"])
    assert listed.exit_code == 2 and "Error: checkpoint" in listed.output
    assert "member.json: member.json kind is 'paligemma-classifier', expected 'detr'" in listed.output


def test_check_command_names_each_problem_and_exits_2(stock: Any, tmp_path: Path) -> None:
    from ensembles.checkpoint import MemberSpec, write_member_spec

    folder = stock.stock_checkpoint(tmp_path / "src", loc="missing")
    write_member_spec(folder, MemberSpec(kind="paligemma-detector", name="d", image_size=32,
                                         prompt="Detect Fracture", labels=("Fracture",)))
    result = CliRunner().invoke(cli, ["models", "check", str(folder)])
    assert result.exit_code == 2, result.output
    assert any(line.startswith("FAIL loc-tokens ") for line in result.output.splitlines())
    assert result.output.splitlines()[-1].startswith(
        f"Error: checkpoint '{folder}' (paligemma-detector) fails 1 check(s): loc-tokens: the saved "
        "tokenizer lacks 1024 of the 1024 loc tokens")
    bad_import = CliRunner().invoke(cli, ["models", "import", str(folder), "--kind", "paligemma-detector",
                                          "--out", str(tmp_path / "m"), "--intended-use", "demo"])
    assert bad_import.exit_code == 2 and "loc-tokens: " in bad_import.output
    assert not (tmp_path / "m").exists()
    missing = CliRunner().invoke(cli, ["models", "import", str(folder), "--kind", "paligemma-detector",
                                       "--out", str(tmp_path / "m")])
    assert missing.exit_code == 2 and "Missing option '--intended-use'" in missing.output
