"""Fixtures for the runner: a tiny three-member ensemble and a small phantom archive on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from dicom_io.phantom import PhantomConfig, write_phantom_archive

MEMBER_NAMES = ("pg-cls", "pg-det", "detr")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random-init tiny members of the three real architectures, as checkpoints (built once)."""
    from ensembles.demo_arch.paligemma import write_tiny_paligemma_checkpoint
    from ensembles.demo_arch.detr import write_tiny_detr_checkpoint

    root = tmp_path_factory.mktemp("models")
    write_tiny_paligemma_checkpoint(root / "pg-cls", "paligemma-classifier", name="pg-cls", seed=1)
    write_tiny_paligemma_checkpoint(root / "pg-det", "paligemma-detector", name="pg-det", seed=2, threshold=0.0,
                                    options={"max_new_tokens": 11})
    write_tiny_detr_checkpoint(root / "detr", name="detr", seed=3)
    return root


def write_site(directory: Path, models: Path, *, thresholds: dict[str, float] | None = None,
               output: str = "", extra: str = "", run: str = "") -> Path:
    """A site config + operating point over the tiny models; returns the config path (``run``:
    more ``[run]`` lines).

    Studies are finished in the runner's own process (``writers = 0``) unless ``run`` names
    ``writers``: a writer process costs each run its start (about a second here, most of a tiny
    run). The process pool is covered where it matters: the writer pool's own tests, the
    kill-and-rerun tests (``writers = 1``) and every run of the embedded default.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if "writers" not in run:
        run = f"writers = 0\n{run}"
    op = {
        "schema_version": 1,
        "thresholds": thresholds or {"pg-cls": 0.5, "pg-det": 0.5, "detr": 0.5},
        "vote": {"rule": "any"},
        "boxes": {"score_threshold": 0.0, "iou_threshold": 0.55, "scoring": "max",
                  "skip_box_threshold": 0.0, "members": ["pg-det", "detr"], "weights": None},
    }
    (directory / "op.json").write_text(json.dumps(op), encoding="utf-8")
    members = "\n".join(
        f'[members.{name}]\nkind = "{kind}"\ncheckpoint = "{models / name}"\n'
        for name, kind in zip(MEMBER_NAMES, ("paligemma-classifier", "paligemma-detector", "detr"))
    )
    text = f'operating_point = "op.json"\n{extra}\n[run]\ndevice = "cpu"\nworkers = 1\nbatch_size = 4\n{run}\n\n{members}\n'
    if output:
        text += f"\n[output]\n{output}\n"
    path = directory / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def site_writer() -> Callable[..., Path]:
    """:func:`write_site` itself, for tests that need other settings."""
    return write_site


@pytest.fixture
def site(tmp_path: Path, tiny_models: Path) -> Path:
    return write_site(tmp_path / "site", tiny_models)


@pytest.fixture(scope="session")
def small_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five small phantom studies (read-only: copy it before changing it)."""
    root = tmp_path_factory.mktemp("archive")
    config = PhantomConfig(n_studies=5, seed=11, size_range=(96, 160), views_range=(1, 2))
    write_phantom_archive(root / "archive", root / "labels.csv", config)
    return root / "archive"
