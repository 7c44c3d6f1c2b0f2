"""Configuration of the synthetic phantom archive (see ``docs/phantom.md``).

The defaults are the numbers of the phantom's specification and of the committed sample
archive, so ``PhantomConfig(n_studies=24, seed=20261127)`` regenerates
``sample_data/archive`` bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from pydicom.uid import PYDICOM_ROOT_UID

from dicom_io.errors import DicomIOError
from dicom_io.phantom.style_ranges import STYLE_RANGES

#: Bumped whenever a change to the generator changes its output for the same config; written
#: into every file's SoftwareVersions so an archive says which generator made it.
PHANTOM_VERSION = "phantom-1"

#: Drawing styles: ``rods`` (the phantom of docs/phantom.md, the default), ``toy`` (bright
#: shapes on noise, for the detector's learnability check: :mod:`dicom_io.phantom.toy`), and
#: ``randomised`` and ``wide`` (training) / ``shifted`` and ``shifted-2`` (measurement): the rods
#: task rendered from declared ranges (:mod:`dicom_io.phantom.varied`, docs/phantom.md "Styles").
STYLES: tuple[str, ...] = ("rods", "toy", "randomised", "wide", "shifted", "shifted-2")

#: Names of the three storage forms, in the order of :attr:`PhantomConfig.compression_mix`.
COMPRESSION_KINDS: tuple[str, str, str] = ("uncompressed", "jpeg2000-lossless", "rle-lossless")


class PhantomError(DicomIOError, ValueError):
    """A phantom configuration or output location cannot be used."""

    reason = "phantom"


def _check_fraction(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise PhantomError(f"PhantomConfig.{name} must be a fraction in [0, 1], got {value!r}")


def _check_range(name: str, value: tuple[int, int], low: int, high: int) -> None:
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and low <= value[0] <= value[1] <= high
    )
    if not ok:
        raise PhantomError(
            f"PhantomConfig.{name} must be a (min, max) tuple of ints with "
            f"{low} <= min <= max <= {high}, got {value!r}"
        )


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate: how many studies, how they vary, and how files are stored.

    Everything random is drawn from ``seed`` (and the other fields), so one config always
    gives the same archive, byte for byte.
    """

    # Number of studies (one patient each, one to three images each).
    n_studies: int = 24
    # Share of studies with at least one fractured image; the count is rounded, not drawn,
    # so a small archive still has the configured balance.
    positive_fraction: float = 0.4
    # Seed of every random choice: pixels, geometry, names, dates and UIDs.
    seed: int = 0
    # Inclusive range of rows and of columns, each drawn independently (rarely square).
    size_range: tuple[int, int] = (384, 768)
    # Inclusive range of the number of views (images, one series each) per study.
    views_range: tuple[int, int] = (1, 3)
    # Shares of files written uncompressed / JPEG 2000 lossless / RLE lossless (sum 1). The
    # J2K share is high so the committed 12-bit sample stays small (noise makes RLE weak).
    compression_mix: tuple[float, float, float] = (0.1, 0.8, 0.1)
    # Share of images stored inverted as MONOCHROME1 (drawn per image).
    monochrome1_fraction: float = 1.0 / 3.0
    # Share of studies acquired on a DX detector rather than a CR plate (drawn per study).
    dx_fraction: float = 0.5
    # In a positive study one view always shows the fracture; each other view also shows it
    # with this probability (a fracture can be invisible in one projection).
    fracture_visible_fraction: float = 0.6
    # Share of fractured images that carry two fractures instead of one.
    two_fracture_fraction: float = 0.1
    # Share of fractures whose far fragment is shifted sideways by 1..4 px.
    shift_fraction: float = 0.5
    # Share of normal images carrying a distractor (nutrient canal or dense dot).
    distractor_fraction: float = 0.2
    # Share of studies that belong to an earlier study's patient (a follow-up), so that
    # splitting by patient differs from splitting by study.
    repeat_patient_fraction: float = 0.15
    # Root of every generated UID (at most 54 characters, ending with a dot).
    uid_prefix: str = PYDICOM_ROOT_UID
    # What the images show (:data:`STYLES`); the study layout and headers are the same for all.
    style: str = "rods"

    def __post_init__(self) -> None:
        if not (isinstance(self.n_studies, int) and 1 <= self.n_studies <= 100_000):
            raise PhantomError(
                f"PhantomConfig.n_studies must be an int in 1..100000, got {self.n_studies!r}"
            )
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise PhantomError(f"PhantomConfig.seed must be an int >= 0, got {self.seed!r}")
        _check_range("size_range", self.size_range, 64, 4096)
        _check_range("views_range", self.views_range, 1, 3)
        for name in (
            "positive_fraction",
            "monochrome1_fraction",
            "dx_fraction",
            "fracture_visible_fraction",
            "two_fracture_fraction",
            "shift_fraction",
            "distractor_fraction",
            "repeat_patient_fraction",
        ):
            _check_fraction(name, getattr(self, name))
        mix = self.compression_mix
        if not (isinstance(mix, tuple) and len(mix) == 3):
            raise PhantomError(
                "PhantomConfig.compression_mix must be three fractions "
                f"{COMPRESSION_KINDS}, got {mix!r}"
            )
        for kind, share in zip(COMPRESSION_KINDS, mix):
            _check_fraction(f"compression_mix[{kind}]", share)
        if abs(sum(mix) - 1.0) > 1e-6:
            raise PhantomError(
                f"PhantomConfig.compression_mix must sum to 1, got {mix!r} (sum {sum(mix):.6g})"
            )
        if self.style not in STYLES:
            raise PhantomError(f"PhantomConfig.style must be one of {', '.join(STYLES)}, got {self.style!r}")
        prefix = self.uid_prefix
        if not (
            isinstance(prefix, str)
            and prefix.endswith(".")
            and len(prefix) <= 54
            and all(part.isdigit() and (part == "0" or not part.startswith("0"))
                    for part in prefix[:-1].split("."))
        ):
            raise PhantomError(
                "PhantomConfig.uid_prefix must be a dotted numeric UID root of at most 54 "
                f"characters ending with '.', e.g. {PYDICOM_ROOT_UID!r}; got {prefix!r}"
            )

    def fingerprint(self) -> str:
        """A stable text form of every field (and of a varied style's declared ranges), mixed
        into each UID.

        Two archives made with different settings then never share a UID, even with one seed.
        """
        fields = asdict(self)
        if fields["style"] == "rods":  # the default style keeps the UIDs it always had
            del fields["style"]
        text = PHANTOM_VERSION + "|" + "|".join(f"{k}={fields[k]!r}" for k in sorted(fields))
        if self.style in STYLE_RANGES:  # a varied style draws from its declared ranges: a change
            text += f"|ranges={STYLE_RANGES[self.style]!r}"  # to them is another archive
        return text
