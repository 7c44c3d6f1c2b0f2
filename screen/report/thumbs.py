"""Thumbnails of the flagged studies' images with their boxes: PNG files beside the page.

Each image is decoded by the pipeline's own decoder (:func:`dicom_io.pixels.load_radiograph`,
so the window is the one the members saw) and drawn by :func:`dicom_io.annotate.burn_in` with
the level styles and wording every other picture of a result uses. Only pixel data and the
boxes are drawn: no header value (no name, no id) reaches a thumbnail, and the PNG carries no
text chunks.

The night makes each flagged study's thumbnails as it finishes the study (:func:`study_thumbs`),
from the :class:`Preview` it kept of each image when it decoded it (the image :func:`shrink`-ed
to :data:`MAX_SIDE`), so the page at the end decodes nothing again; ``screen report`` and
any thumbnail the night did not make decode the source.

A thumbnail's name is a digest of the image's SOP Instance UID and of what is drawn on it, so
a re-screened study with other boxes gets a new file, an unchanged one is reused without
decoding, and no header value ever becomes a file name. Files of the folder no page names are
removed after the page is written (:func:`prune`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import cv2

import numpy as np

from dicom_io.annotate import BoxLabel, burn_in, finding_text, level_style, shrink
from dicom_io.atomic import atomic_write_bytes
from dicom_io.errors import DicomIOError
from dicom_io.pixels import load_radiograph
from screen.report.model import ImageEntry, images_of

__all__ = ["MAX_SIDE", "THUMBS_DIR", "Preview", "Thumb", "make_thumb", "prune", "study_thumbs"]

log = logging.getLogger("screen.report")

THUMBS_DIR = "report/thumbs"
"""The thumbnails' folder, relative to the output folder."""
MAX_SIDE = 512
"""A thumbnail's long side at most, in pixels."""
_NAME = re.compile(r"[0-9a-f]{20}\.png")


@dataclass(frozen=True)
class Preview:
    """An image as the pipeline saw it, kept small for its thumbnail.

    Attributes:
        pixels: uint8, the image :func:`dicom_io.annotate.shrink`-ed to :data:`MAX_SIDE`.
        rows: the source image's rows (the boxes' frame).
        cols: its columns.
    """

    pixels: np.ndarray
    rows: int
    cols: int

    @classmethod
    def of(cls, pixels: np.ndarray) -> "Preview":
        """The preview of a decoded image (:class:`dicom_io.pixels.Radiograph` ``pixels``)."""
        return cls(shrink(pixels, MAX_SIDE), int(pixels.shape[0]), int(pixels.shape[1]))


@dataclass(frozen=True)
class Thumb:
    """One image's picture on the page.

    Attributes:
        sop_instance_uid: the image.
        link: the PNG's path relative to the output folder (``None``: a placeholder).
        problem: why there is no picture (a reason code, e.g. ``source-not-found``).
        width: the PNG's width (0 for a placeholder).
        height: its height.
        texts: the findings' texts, as drawn.
    """

    sop_instance_uid: str
    link: str | None
    problem: str = ""
    width: int = 0
    height: int = 0
    texts: tuple[str, ...] = ()


def _labels(image: ImageEntry, levels: Sequence[str]) -> list[BoxLabel]:
    labels: list[BoxLabel] = []
    for finding in image.findings:
        known = finding.level if finding.level in levels else None  # an unnamed level: drawn solid
        labels.append((finding.box, finding_text(min(max(finding.score, 0.0), 1.0), finding.level),
                       level_style(known, levels)))
    return labels


def _name(image: ImageEntry, labels: Sequence[BoxLabel]) -> str:
    drawn = repr((image.sop_instance_uid, MAX_SIDE, [(b, t, s.colour, s.dashed) for b, t, s in labels]))
    return hashlib.sha256(drawn.encode("utf-8")).hexdigest()[:20] + ".png"


def make_thumb(out_dir: Path, image: ImageEntry, levels: Sequence[str], sources: Mapping[str, Path],
               previews: Mapping[str, Preview] | None = None) -> Thumb:
    """The thumbnail of ``image`` under ``out_dir/report/thumbs`` (made, or reused when its file
    exists), drawn on its preview when one is given, else on its decoded source; a placeholder
    with a reason when its source cannot be found or decoded."""
    labels = _labels(image, levels)
    texts = tuple(text for _, text, _ in labels)
    name = _name(image, labels)
    target = out_dir / THUMBS_DIR / name
    link = f"{THUMBS_DIR}/{name}"
    if target.is_file():
        size = _png_size(target)
        if size is not None:
            return Thumb(image.sop_instance_uid, link, width=size[0], height=size[1], texts=texts)
    preview = (previews or {}).get(image.sop_instance_uid)
    if preview is not None:
        rgb = burn_in(preview.pixels, labels, max_side=MAX_SIDE, frame=(preview.rows, preview.cols))
    else:
        source = sources.get(image.sop_instance_uid)
        if source is None or not Path(source).is_file():
            return Thumb(image.sop_instance_uid, None, "source-not-found", texts=texts)
        try:
            radiograph = load_radiograph(source)
            rgb = burn_in(radiograph.pixels, labels, max_side=MAX_SIDE)
        except DicomIOError as exc:
            return Thumb(image.sop_instance_uid, None, exc.reason, texts=texts)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        return Thumb(image.sop_instance_uid, None, "encode-failed", texts=texts)
    atomic_write_bytes(target, png.tobytes())
    return Thumb(image.sop_instance_uid, link, width=rgb.shape[1], height=rgb.shape[0], texts=texts)


def study_thumbs(out_dir: Path, study_instance_uid: str, image_uids: Sequence[str],
                 finding_rows: Sequence[Mapping[str, object]], levels: Sequence[str],
                 previews: Mapping[str, Preview]) -> list[Thumb]:
    """A flagged study's thumbnails, made as the night finishes it: the images the page will
    show (:func:`screen.report.model.images_of` reads ``findings.csv`` rows the same way), each
    drawn on its preview, so the page reuses them."""
    scan = [{"study_instance_uid": study_instance_uid, "sop_instance_uid": uid, "outcome": "selected"}
            for uid in image_uids]
    shown = images_of(scan, finding_rows).get(study_instance_uid, ())
    return [make_thumb(out_dir, image, levels, {}, previews) for image in shown]


def prune(out_dir: Path, keep: Sequence[str]) -> int:
    """Remove thumbnails (files named as :func:`make_thumb` names them) the page does not use."""
    folder = out_dir / THUMBS_DIR
    if not folder.is_dir():
        return 0
    kept = {Path(link).name for link in keep}
    removed = 0
    for path in folder.iterdir():
        if _NAME.fullmatch(path.name) and path.name not in kept and path.is_file():
            os.unlink(path)
            removed += 1
    return removed


def _png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG's header, ``None`` when it is not one."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
