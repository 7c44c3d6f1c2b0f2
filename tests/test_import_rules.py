"""The architecture's import arrows: dicom_io never imports torch; ensembles never imports dicom_io, screen or train."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _modules(package: str) -> list[str]:
    return [f"{package}.{m.name}" for m in pkgutil.walk_packages([str(ROOT / package)]) if not m.name.endswith("__main__")]


def _loaded_after_import(modules: list[str]) -> set[str]:
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print('\\n'.join(sorted({n.split('.')[0] for n in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT, check=True)
    return set(out.stdout.split())


def test_dicom_io_never_imports_torch() -> None:
    loaded = _loaded_after_import(_modules("dicom_io"))
    assert "torch" not in loaded and "transformers" not in loaded


def test_ensembles_never_imports_dicom_io_screen_or_train() -> None:
    loaded = _loaded_after_import(_modules("ensembles"))
    assert not {"dicom_io", "screen", "train"} & loaded


# --- The import graph, read from the source: every import statement, wherever it stands
# (module level, inside functions, under TYPE_CHECKING) counts as an arrow.

PACKAGES = ("screen", "ensembles", "train", "dicom_io")
#: What dicom_io may take from ensembles: the pure-Python contracts (no torch, no models).
DICOM_IO_MAY_IMPORT = {"ensembles", "ensembles.types", "ensembles.errors", "ensembles.config_model"}


def _source_modules(root: Path = ROOT) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for file in sorted((root / package).rglob("*.py")):
            parts = list(file.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = file
    return found


def _import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """``{module: {project modules it imports}}`` (a submodule importing its own package
    ancestors does not count: Python runs those ``__init__`` files first anyway)."""
    import ast

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, file in modules.items():
        package = module.split(".") if file.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package[: len(package) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                hit = resolve(target)
                if hit and hit != module and not module.startswith(hit + "."):
                    graph[module].add(hit)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))
    return found


def test_the_circle_finder_finds_circles(tmp_path: Path) -> None:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "screen" / "a.py").write_text("from screen.b import x\n")
    (tmp_path / "screen" / "b.py").write_text("def f():\n    from screen import c\n")
    (tmp_path / "screen" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import screen.a\n")
    (tmp_path / "train" / "d.py").write_text("from . import e\n")
    (tmp_path / "train" / "e.py").write_text("import os\n")
    circles = _circles(_import_graph(_source_modules(tmp_path)))
    assert circles == [["screen.a", "screen.b", "screen.c"]]


def test_no_import_circles() -> None:
    circles = _circles(_import_graph(_source_modules()))
    assert circles == [], "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_dicom_io_takes_only_the_pure_contracts_from_ensembles() -> None:
    graph = _import_graph(_source_modules())
    taken = {target for module, targets in graph.items() if module.startswith("dicom_io")
             for target in targets if target.split(".")[0] != "dicom_io"}
    assert taken <= DICOM_IO_MAY_IMPORT, sorted(taken - DICOM_IO_MAY_IMPORT)
    # ... and those contracts import nothing heavy and nothing else of the project
    for contract in sorted(DICOM_IO_MAY_IMPORT - {"ensembles"}):
        assert graph[contract] <= DICOM_IO_MAY_IMPORT, (contract, graph[contract])
    loaded = _loaded_after_import(sorted(DICOM_IO_MAY_IMPORT))
    assert not {"torch", "transformers", "dicom_io", "screen", "train"} & loaded


def test_every_error_the_project_defines_has_the_one_root() -> None:
    """Every exception class in the four packages is a ScreenError (the CLI's one conversion
    catches them all), and there is one root class, in ensembles.errors."""
    import importlib
    import inspect

    from ensembles.errors import ScreenError

    modules = [m for m in _source_modules() if not m.endswith("__main__")]
    strays: list[str] = []
    roots: list[str] = []
    for name in modules:
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name or not issubclass(cls, BaseException):
                continue
            if issubclass(cls, Exception) and cls.__bases__ == (Exception,):
                roots.append(f"{name}.{cls.__name__}")
            if not issubclass(cls, ScreenError) and not name.startswith("screen.cli"):
                strays.append(f"{name}.{cls.__name__}")
    assert strays == []
    assert roots == ["ensembles.errors.ScreenError"]
