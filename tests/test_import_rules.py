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
