"""Write a phantom archive: DICOM files in an export-like folder tree plus the labels CSV.

Layout: ``out_dir/<PatientID>/<StudyDate>_<AccessionNumber>/<SeriesNumber>/1.dcm``. Each view
is its own series with one instance, as CR/DX modalities usually export them.

Every random value comes from generators seeded with ``(seed, role, index)``, and every UID
from a hash of the config's fingerprint and the item's position, so one config gives the same
bytes on every run and machine (given the same pydicom and pylibjpeg encoders).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from dicom_io.atomic import atomic_write_bytes
from dicom_io.phantom.config import PhantomConfig, PhantomError
from dicom_io.phantom.draw import PhantomImage, generate_image
from dicom_io.phantom.toy import generate_toy_image
from dicom_io.phantom.varied import STYLE_RANGES, StyledDraw, StyleRanges, draw_styled, generate_styled_image
from dicom_io.phantom.header import ImageHeader, StudyHeader, build_dataset, compress, to_bytes
from dicom_io.phantom.cohort import StudyPlan, plan_archive
from dicom_io.tables import LABELS, write_table

#: The labels CSV's columns (declared in :data:`dicom_io.tables.LABELS`).
LABEL_COLUMNS: tuple[str, ...] = LABELS.names
FEMALE = ("Anna", "Maria", "Eva", "Julia", "Sofia", "Lena", "Clara", "Ida", "Nora", "Emma",
          "Laura", "Marta", "Elin", "Greta", "Hanna", "Olivia")  # fmt: skip
MALE = ("Jonas", "Lukas", "Paul", "Erik", "David", "Felix", "Oskar", "Noah", "Anton", "Leo",
        "Jakob", "Samuel", "Hugo", "Martin", "Tomas", "Viktor")  # fmt: skip
FIRST_STUDY_DATE = date(2024, 1, 1)
STUDY_DATE_SPAN_DAYS = 731


@dataclass(frozen=True)
class PhantomSummary:
    """What :func:`write_phantom_archive` wrote (counts are of images unless named)."""

    out_dir: Path
    labels_csv: Path
    n_studies: int
    n_positive_studies: int
    n_patients: int
    n_images: int
    n_positive_images: int
    n_boxes: int
    n_monochrome1: int
    n_distractors: int
    modalities: Mapping[str, int]
    compressions: Mapping[str, int]
    total_bytes: int


def _uid_key(config: PhantomConfig, ranges: StyleRanges | None) -> str:
    """What every UID of an archive is hashed from: the config's fingerprint, and the ranges
    when they replace the style's own, so an archive drawn from other ranges (other pixels)
    never shares a UID with the style's archive of the same seed."""
    key = config.fingerprint()
    if ranges is not None and ranges != STYLE_RANGES.get(config.style):
        key += f"|ranges={ranges!r}"
    return key


def _uid(config: PhantomConfig, key: str, *parts: object) -> str:
    text = key + "|" + "|".join(str(p) for p in parts)
    return str(generate_uid(prefix=config.uid_prefix, entropy_srcs=[text]))


def _patient(config: PhantomConfig, patient: int) -> tuple[str, str, str, str]:
    """Name, ID, birth date and sex of one synthetic patient (clearly named PHANTOM)."""
    rng = np.random.default_rng([config.seed, 2, patient])
    sex = "F" if rng.random() < 0.5 else "M"
    given = str(rng.choice(FEMALE if sex == "F" else MALE))
    birth = date(1940, 1, 1) + timedelta(days=int(rng.integers(0, 26_000)))
    # The multiplier is coprime with 10**7, so IDs look random yet never repeat.
    patient_id = f"PH{(patient * 4_567_891 + config.seed * 104_729) % 10**7:07d}"
    return f"PHANTOM^{given}", patient_id, birth.strftime("%Y%m%d"), sex


def _study_header(config: PhantomConfig, plan: StudyPlan, key: str) -> StudyHeader:
    rng = np.random.default_rng([config.seed, 1, plan.index])
    name, patient_id, birth, sex = _patient(config, plan.patient)
    modality = "DX" if rng.random() < config.dx_fraction else "CR"
    when = FIRST_STUDY_DATE + timedelta(days=int(rng.integers(0, STUDY_DATE_SPAN_DAYS)))
    hour, minute, second = int(rng.integers(7, 20)), int(rng.integers(0, 60)), int(rng.integers(0, 60))
    serial = (plan.index * 731_129 + config.seed * 7_919) % 10**6  # unique, coprime multiplier
    referrer = str(rng.choice(FEMALE + MALE))
    return StudyHeader(
        patient_name=name,
        patient_id=patient_id,
        patient_birth_date=birth,
        patient_sex=sex,
        study_uid=_uid(config, key, "study", plan.index),
        study_date=when.strftime("%Y%m%d"),
        study_time=f"{hour:02d}{minute:02d}{second:02d}",
        accession=f"A{when.year % 100:02d}{serial:06d}",
        study_id=f"{serial:06d}",
        referring_physician=f"REFERRER^{referrer}",
        modality=modality,
        body_part="SHOULDER" if rng.random() < 0.5 else "ARM",
        laterality="L" if rng.random() < 0.5 else "R",
        station=f"{modality}-ROOM-{int(rng.integers(1, 4))}",
        detector_type="SCINTILLATOR" if rng.random() < 0.7 else "DIRECT",
    )


def _views(laterality: str) -> tuple[str, str, str]:
    side = laterality[0]
    return "AP", f"{side}L", f"{side}LO"


def _prepare(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise PhantomError(f"output {out_dir} exists and is not a folder; choose a folder path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise PhantomError(
            f"output folder {out_dir} is not empty; choose an empty folder, or pass "
            "overwrite=True (--overwrite) to replace the phantom files in it"
        )
    out_dir.mkdir(parents=True, exist_ok=True)


def _remove_stale(out_dir: Path, written: set[Path]) -> None:
    """After an overwrite, delete ``.dcm`` files this run did not write, then empty folders."""
    for path in sorted(out_dir.rglob("*.dcm")):
        if path.resolve() not in written:
            path.unlink()
    for folder in sorted((p for p in out_dir.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()


def _image_rng(config: PhantomConfig, plan: StudyPlan, view: int) -> np.random.Generator:
    """The one generator an image's draw uses (the archive and :func:`styled_draws` alike)."""
    return np.random.default_rng([config.seed, 4, plan.index, view])


def styled_draws(config: PhantomConfig, ranges: StyleRanges | None = None
                 ) -> Iterator[tuple[str, StyledDraw]]:
    """Each image of a varied-style archive, as :func:`write_phantom_archive` draws it for the
    same ``config`` and ``ranges``: its SOP Instance UID and the whole draw (the truth boxes with
    the gap and bone masks and the factors drawn), for measurements the files cannot give.

    Raises:
        PhantomError: ``config.style`` is not a varied style and no ``ranges`` are given.
    """
    if ranges is None and config.style not in STYLE_RANGES:
        raise PhantomError(f"styled draws need a varied style ({', '.join(sorted(STYLE_RANGES))}) "
                           f"or ranges; the config's style is {config.style!r}")
    drawn = ranges if ranges is not None else STYLE_RANGES[config.style]
    key = _uid_key(config, ranges)
    for plan in plan_archive(config):
        for j, view in enumerate(plan.views):
            draw = draw_styled(_image_rng(config, plan, j), drawn, positive=view.positive,
                               size_range=config.size_range,
                               two_fracture_fraction=config.two_fracture_fraction)
            yield _uid(config, key, "sop", plan.index, j), draw


def _draw(config: PhantomConfig, rng: np.random.Generator, positive: bool,
          ranges: StyleRanges | None = None) -> PhantomImage:
    """One image of ``config.style`` (drawn from ``ranges`` instead of the style's own, when given)."""
    if ranges is not None:
        return draw_styled(rng, ranges, positive=positive, size_range=config.size_range,
                           two_fracture_fraction=config.two_fracture_fraction).image
    if config.style == "toy":
        return generate_toy_image(rng, positive=positive, size_range=config.size_range,
                                  two_fracture_fraction=config.two_fracture_fraction)
    if config.style in STYLE_RANGES:
        return generate_styled_image(rng, config.style, positive=positive, size_range=config.size_range,
                                     two_fracture_fraction=config.two_fracture_fraction)
    return generate_image(rng, positive=positive, size_range=config.size_range,
                          two_fracture_fraction=config.two_fracture_fraction,
                          shift_fraction=config.shift_fraction,
                          distractor_fraction=config.distractor_fraction)


def write_phantom_archive(
    out_dir: Path, labels_csv: Path, config: PhantomConfig, *, overwrite: bool = False,
    ranges: StyleRanges | None = None,
) -> PhantomSummary:
    """Generate the archive described by ``config`` into ``out_dir`` and its labels CSV.

    Args:
        out_dir: folder for the DICOM tree; must be empty or absent unless ``overwrite``.
        labels_csv: the labels file (columns :data:`LABEL_COLUMNS`; one row per box, one row
            with empty coordinates per normal image). Written last, atomically.
        config: what to generate.
        overwrite: replace files in a non-empty ``out_dir`` and delete ``.dcm`` files there
            that this config does not produce.
        ranges: draw every image from these ranges (e.g. ``randomised`` with one factor group
            from ``shifted``, :func:`dicom_io.phantom.style_ranges.blend`) instead of
            ``config.style``'s own; ``config.style`` must be a varied style (it still names
            the archive's seed streams and headers). Ranges other than the style's own are
            mixed into every UID: such an archive shares its patients with the style's archive
            of the same seed, never a study, series or instance UID.

    Returns:
        Counts of what was written.

    Raises:
        PhantomError: ``out_dir`` is a file, or is not empty and ``overwrite`` is false.
    """
    out_dir, labels_csv = Path(out_dir), Path(labels_csv)
    if ranges is not None and config.style not in STYLE_RANGES:
        raise PhantomError(f"ranges replace a varied style's own ({', '.join(sorted(STYLE_RANGES))}); "
                           f"the config's style is {config.style!r}")
    _prepare(out_dir, overwrite)
    key = _uid_key(config, ranges)
    plans = plan_archive(config)
    rows: list[dict[str, object]] = []
    written: set[Path] = set()
    modalities: Counter[str] = Counter()
    compressions: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    total_bytes = 0

    for plan in plans:
        study = _study_header(config, plan, key)
        counts["positive_studies"] += plan.positive
        rng = np.random.default_rng([config.seed, 3, plan.index])
        spacing = round(float(rng.uniform(0.1, 0.2)), 3)
        started = datetime.strptime(study.study_date + study.study_time, "%Y%m%d%H%M%S")
        for j, view in enumerate(plan.views):
            image = _draw(config, _image_rng(config, plan, j), view.positive, ranges)
            header = ImageHeader(
                series_uid=_uid(config, key, "series", plan.index, j),
                sop_uid=_uid(config, key, "sop", plan.index, j),
                series_number=j + 1,
                series_time=(started + timedelta(minutes=2 * j + 1)).strftime("%H%M%S"),
                view_position=_views(study.laterality)[j],
                monochrome1=view.monochrome1,
                spacing_mm=spacing,
                kvp=float(rng.uniform(55.0, 70.0)),
                compression=view.compression,
                window=image.window,
            )
            ds = build_dataset(study, header, image.pixels)
            compress(ds, view.compression)
            data = to_bytes(ds)
            path = out_dir / study.patient_id / f"{study.study_date}_{study.accession}" / str(j + 1) / "1.dcm"
            atomic_write_bytes(path, data)
            written.add(path.resolve())
            total_bytes += len(data)
            modalities[study.modality] += 1
            compressions[view.compression] += 1
            counts["images"] += 1
            counts["positive_images"] += image.positive
            counts["boxes"] += len(image.boxes)
            counts["monochrome1"] += view.monochrome1
            counts["distractors"] += image.distractor is not None
            base = {"StudyInstanceUID": study.study_uid, "SOPInstanceUID": header.sop_uid,
                    "PatientID": study.patient_id, "SeriesInstanceUID": header.series_uid}
            for box in image.boxes:
                rows.append({**base, "label": "fracture", **dict(zip(("x0", "y0", "x1", "y1"), box))})
            if not image.boxes:
                rows.append({**base, "label": "normal", "x0": "", "y0": "", "x1": "", "y1": ""})

    if overwrite:
        _remove_stale(out_dir, written)
    write_table(labels_csv, LABELS, rows, LABEL_COLUMNS)
    return PhantomSummary(
        out_dir=out_dir,
        labels_csv=labels_csv,
        n_studies=len(plans),
        n_positive_studies=counts["positive_studies"],
        n_patients=len({p.patient for p in plans}),
        n_images=counts["images"],
        n_positive_images=counts["positive_images"],
        n_boxes=counts["boxes"],
        n_monochrome1=counts["monochrome1"],
        n_distractors=counts["distractors"],
        modalities=dict(sorted(modalities.items())),
        compressions=dict(sorted(compressions.items())),
        total_bytes=total_bytes,
    )


__all__ = ["LABEL_COLUMNS", "PhantomSummary", "write_phantom_archive"]
