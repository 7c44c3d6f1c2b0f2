"""Fixtures shared by every test package: synthetic DICOM files written to ``tmp_path``."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Identifier keys (screen.id_key) are made under XDG_CONFIG_HOME: a throwaway one, never the home's,
# removed when the test process ends (each run left one behind in /tmp before).
_CONFIG_HOME = tempfile.mkdtemp(prefix="fracture-screen-config-")
os.environ["XDG_CONFIG_HOME"] = _CONFIG_HOME
atexit.register(shutil.rmtree, _CONFIG_HOME, ignore_errors=True)
os.environ.pop("FRACTURE_SCREEN_SALT", None)

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"

WriteDicom = Callable[..., Path]


def make_dataset(
    *,
    rows: int = 32,
    cols: int = 24,
    modality: str = "CR",
    sop_class: str = CR_STORAGE,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    pixels: np.ndarray | None = None,
    with_pixels: bool = True,
    **attrs: Any,
) -> Dataset:
    """A small, valid single-frame 12-bit MONOCHROME2 image dataset (override anything)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName = "TEST^SECRET"
    ds.PatientID = "PID-1"
    ds.Modality = modality
    ds.StudyDate = "20260101"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if with_pixels:
        if pixels is None:
            rng = np.random.default_rng(0)
            pixels = rng.integers(0, 4096, size=(rows, cols), dtype=np.uint16)
        ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


@pytest.fixture
def write_dicom(tmp_path: Path) -> WriteDicom:
    """``write_dicom(relative_path, **make_dataset_kwargs) -> Path`` under ``tmp_path``."""

    def _write(relative: str | Path = "image.dcm", **kwargs: Any) -> Path:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        make_dataset(**kwargs).save_as(path, enforce_file_format=True)
        return path

    return _write


@pytest.fixture
def dataset_factory() -> Callable[..., Dataset]:
    """:func:`make_dataset` itself, for tests that change a dataset before writing it."""
    return make_dataset


# --- DICOM SR validation (dciodvfy, PixelMed): the `sr_validator` fixture ----------------------

import re as _re
import shutil as _shutil
import subprocess as _subprocess
from dataclasses import dataclass as _dataclass, field as _field

_TOOLS = Path(__file__).resolve().parent / "tools"
_PIXELMED_JAR = Path(os.environ.get("PIXELMED_JAR", "/usr/share/java/pixelmed.jar"))


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _redacted(text: str, path: Path) -> str:
    """Validator output with the SR's patient name replaced (names never reach logs)."""
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientName"])
        name = str(header.get("PatientName", ""))
    except Exception:  # an unreadable file: the validators say so themselves
        return text
    for part in sorted({name, *name.split("^")}, key=len, reverse=True):
        if len(part.strip()) > 1:
            text = text.replace(part, "<patient name>")
    return text


@_dataclass
class SRValidation:
    """What the validators said about one file: ``errors`` is empty when the test passed."""

    path: Path
    dciodvfy_errors: list[str] = _field(default_factory=list)
    dciodvfy_warnings: list[str] = _field(default_factory=list)
    pixelmed_errors: list[str] = _field(default_factory=list)
    pixelmed_warnings: list[str] = _field(default_factory=list)
    pixelmed_ran: bool = False

    @property
    def errors(self) -> list[str]:
        return self.dciodvfy_errors + self.pixelmed_errors

    @property
    def warnings(self) -> list[str]:
        return self.dciodvfy_warnings + self.pixelmed_warnings


def _dciodvfy(path: Path, exe: str) -> tuple[list[str], list[str]]:
    proc = _subprocess.run([exe, "-new", str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    if proc.returncode != 0 and not errors:
        errors.append(f"dciodvfy exited with status {proc.returncode}: {' | '.join(lines[-3:])}")
    return errors, warnings


def _pixelmed(paths: list[Path]) -> dict[Path, tuple[list[str], list[str]]]:
    """Run PixelMed once over ``paths``; (errors, warnings) per file."""
    script = _TOOLS / "pixelmed-srvalidate"
    proc = _subprocess.run(
        ["sh", str(script), *map(str, paths)], capture_output=True, text=True, timeout=900
    )
    reports: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in proc.stdout.splitlines():
        if line.startswith("==== FILE "):
            current = reports.setdefault(line[len("==== FILE "):], [])
        elif line.startswith("==== END "):
            current = None
        elif current is not None:
            current.append(line)
    result: dict[Path, tuple[list[str], list[str]]] = {}
    for path in paths:
        lines = reports.get(str(path))
        if lines is None:
            result[path] = ([f"PixelMed gave no report (status {proc.returncode}): {proc.stderr[-500:]}"], [])
            continue
        errors = [line for line in lines if _re.match(r"^(Internal )?Error", line)]
        if not any("Root Template Validation Complete" in line for line in lines):
            errors.append("PixelMed did not complete the template validation")
        result[path] = (errors, [line for line in lines if line.startswith("Warning")])
    return result


@pytest.fixture
def sr_validator() -> Callable[..., list[SRValidation]]:
    """``validate(*paths, pixelmed=False) -> [SRValidation]``: fail the test on any validator error.

    Every file goes through ``dciodvfy -new`` (dicom3tools, about 10 ms a file). Missing
    ``dciodvfy`` fails the test when the ``CI`` environment variable is set (CI installs
    dicom3tools) and skips it otherwise. ``pixelmed=True`` adds PixelMed's TID 1500 template
    validator, in one JVM for all the paths (about 5 s plus a little per file on a quiet machine;
    use it sparingly); it skips when Java or libpixelmed-java is missing. Warnings are returned,
    not failed on.
    """

    def validate(*paths: str | os.PathLike[str], pixelmed: bool = False) -> list[SRValidation]:
        files = [Path(p) for p in paths]
        if not files:
            raise ValueError("validate() needs at least one path")
        exe = _shutil.which("dciodvfy")
        if exe is None:
            message = "dciodvfy is not installed (Debian: apt-get install dicom3tools)"
            if _in_ci():
                pytest.fail(f"{message}; CI must install it")
            pytest.skip(message)
        results = []
        for path in files:
            errors, warnings = _dciodvfy(path, exe)
            results.append(SRValidation(path, errors, warnings))
        if pixelmed:
            if _shutil.which("java") is None or not _PIXELMED_JAR.is_file():
                pytest.skip(
                    "PixelMed is not installed (Debian: apt-get install default-jre-headless libpixelmed-java)"
                )
            reports = _pixelmed(files)
            for result in results:
                result.pixelmed_errors, result.pixelmed_warnings = reports[result.path]
                result.pixelmed_ran = True
        failed = [r for r in results if r.errors]
        if failed:
            report = "\n".join(
                f"{r.path.name}:\n  " + "\n  ".join(_redacted(e, r.path) for e in r.errors) for r in failed
            )
            pytest.fail(f"DICOM validation errors:\n{report}")
        return results

    return validate


@pytest.fixture(scope="session")
def stock() -> Any:
    """``tests/stock_checkpoints.py``: stock-format PaliGemma checkpoints not made by the
    project's factory (loaded by path: the tests folder is not a package)."""
    import importlib.util

    path = Path(__file__).with_name("stock_checkpoints.py")
    spec = importlib.util.spec_from_file_location("stock_checkpoints", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
