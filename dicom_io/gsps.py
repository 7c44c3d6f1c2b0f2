"""The boxes of one screened study as a Grayscale Softcopy Presentation State (GSPS).

Why: many PACS viewers draw no SR regions, but every one applies a presentation state. The GSPS
(highdicom ``pr``) lives in the study, in its own series, references every greyscale image the
pipeline screened and, on each image with a finding, draws:

- each box as a closed 5-point POLYLINE in PIXEL units (pixel edges, as in ``findings.csv``:
  the image's top-left corner is ``0,0``, its bottom-right ``Columns,Rows``), on the graphic
  layer of its level, with a Line Style (colour and SOLID/DASHED) from
  :func:`dicom_io.annotate.level_style`, so a GSPS, an SC image and the morning page agree;
- its text (:func:`dicom_io.annotate.finding_text`, "AI fracture 87 %") anchored at the box's
  top-left corner; an image-level finding (no box) is a text across the top of the image;
- the window the pipeline applied (:class:`PipelineVoi`): the file's VOI LUT or first window,
  or the percentile window of an image without one, so the radiologist sees what the models saw.

Layers: ``AI_FRACTURE`` (the strictest level, or a single operating point) and ``AI_DOUBT``
(every less strict level), each with its recommended CIELab display colour; viewers that ignore
the per-object line style still colour the layers.

Polarity: a GSPS has one Presentation LUT for all its images, and the photometric
interpretation of a referenced image does not invert it. All MONOCHROME1 images: ``INVERSE``.
All MONOCHROME2: ``IDENTITY``. Mixed (common in CR/DX studies from two rooms): ``IDENTITY``, and
each MONOCHROME1 image gets its window as a VOI LUT table that descends (the window, inverted),
so every image keeps its polarity in one GSPS.

Not referenced: colour images (a GSPS applies to greyscale only; their findings are in the SR
and the SC images). Multi-frame images (screened only when ``[selection]`` allows secondary
captures: CR and DX are single-frame): the annotation names no frame, so a viewer draws it on
every frame (highdicom 0.28 references frames only of enhanced multi-frame images).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass

import numpy as np
from highdicom import (
    VOILUT,
    ModalityLUTTransformation,
    PresentationLUTShapeValues,
    PresentationLUTTransformation,
    ReferencedImageSequence,
)
from highdicom.color import CIELabColor
from highdicom.pr import (
    AnnotationUnitsValues,
    GraphicAnnotation,
    GraphicLayer,
    GraphicObject,
    GraphicTypeValues,
    GrayscaleSoftcopyPresentationState,
    SoftcopyVOILUTTransformation,
    TextObject,
)
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_io.annotate import LevelStyle, finding_text, level_style
from dicom_io.errors import InvalidArgumentError, SRError
from dicom_io.pixels import Radiograph
from dicom_io.sr.build import with_valid_dates
from dicom_io.sr.library import evidence_header, redact_names
from dicom_io.sr.model import AlgorithmInfo, SRFinding

__all__ = [
    "CONTENT_LABEL",
    "NOT_FOR_DIAGNOSIS",
    "PipelineVoi",
    "build_gsps",
    "copy_series_context",
    "presentation_description",
]

CONTENT_LABEL = "AI_FRACTURE"
"""The GSPS's Content Label (a CS value): viewers list presentation states by it."""

NOT_FOR_DIAGNOSIS = "AI screening result, not for primary diagnosis"
"""The one sentence every picture of a result carries (GSPS description, SC banner)."""

SERIES_DESCRIPTION = "AI fracture screen boxes"
_STRICT_LAYER, _DOUBT_LAYER = "AI_FRACTURE", "AI_DOUBT"
_MAX_LUT_ENTRIES = 65536  # a VOI LUT Descriptor's entry count is 16 bits (0 means 65536)
_LUT_TOP = 65535  # 16-bit LUT data


@dataclass(frozen=True)
class PipelineVoi:
    """How the pipeline windowed one image (what its :class:`~dicom_io.pixels.Radiograph` says).

    Attributes:
        source: ``"voi-lut"``, ``"window"``, ``"percentile"`` or ``"none"``
            (:data:`dicom_io.pixels.VOI_SOURCES`).
        percentile_bounds: the modality values mapped to black and white by the percentile
            window (``source == "percentile"`` only).
    """

    source: str
    percentile_bounds: tuple[float, float] | None = None

    @classmethod
    def of(cls, radiograph: Radiograph) -> "PipelineVoi":
        """What ``radiograph`` records of its window."""
        return cls(radiograph.voi_source, radiograph.percentile_bounds)


def presentation_description(intended_use: str) -> str:
    """Content Description of the GSPS (at most 64 characters): says it is an AI result."""
    if intended_use == "clinical":
        return NOT_FOR_DIAGNOSIS
    prefix = {"demo": "DEMO ONLY", "research": "RESEARCH ONLY"}.get(intended_use, "UNVALIDATED")
    return f"{prefix}: {NOT_FOR_DIAGNOSIS}"[:64]


def copy_series_context(target: Dataset, sources: Sequence[Dataset]) -> None:
    """Body part and laterality of the sources on a derived object's General Series, in place.

    General Series Laterality is type 2C, required for a paired body part (SHOULDER, ARM...)
    when the object has no Image Laterality: the sources' Laterality or, failing that, their
    Image Laterality, when all agree; empty (type 2: unknown) when they disagree or say nothing.
    """
    parts = {str(ds.get("BodyPartExamined", "") or "").strip() for ds in sources} - {""}
    if len(parts) == 1:
        target.BodyPartExamined = parts.pop()
    sides = {str(ds.get("Laterality", "") or ds.get("ImageLaterality", "") or "").strip().upper() for ds in sources}
    side = sides.pop() if len(sides) == 1 else ""
    target.Laterality = side if side in ("L", "R") else None


def _window_unit(x: np.ndarray, centre: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2: a window's output on modality values ``x``, scaled to ``[0, 1]``."""
    if function == "SIGMOID":
        return np.asarray(1.0 / (1.0 + np.exp(-4.0 * (x - centre) / width)), dtype=np.float64)
    if function == "LINEAR_EXACT":
        return np.clip((x - centre) / width + 0.5, 0.0, 1.0)
    if width <= 1.0:
        return (x > centre - 0.5).astype(np.float64)
    return np.clip((x - (centre - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _descending_lut(centre: float, width: float, function: str, explanation: str) -> VOILUT:
    """The window as a VOI LUT table, inverted (white at low values): a MONOCHROME1 image's
    window in a GSPS whose Presentation LUT is IDENTITY. Covers the window and one value on
    each side (at most 65536 entries around the centre); values outside take the end entries."""
    first = int(np.floor(centre - width / 2.0)) - 1
    last = int(np.ceil(centre + width / 2.0)) + 1
    if last - first + 1 > _MAX_LUT_ENTRIES:
        first = int(round(centre)) - _MAX_LUT_ENTRIES // 2
        last = first + _MAX_LUT_ENTRIES - 1
    x = np.arange(first, last + 1, dtype=np.float64)
    data = np.rint((1.0 - _window_unit(x, centre, width, function)) * _LUT_TOP).astype(np.uint16)
    return VOILUT(first_mapped_value=first, lut_data=data, lut_explanation=explanation)


def _file_lut(ds: Dataset, invert: bool) -> VOILUT | None:
    """The file's first VOI LUT (what the pipeline applied), inverted for a MONOCHROME1 image
    among MONOCHROME2 ones; ``None`` when it cannot be read."""
    try:
        item = ds.VOILUTSequence[0]
        entries, first, bits = (int(v) for v in item.LUTDescriptor)
        raw = item.LUTData
        if isinstance(raw, bytes):
            data = np.frombuffer(raw, dtype="<u2" if bits > 8 else np.uint8).astype(np.int64)
        else:
            data = np.asarray(raw if isinstance(raw, (list, tuple)) else [raw], dtype=np.int64)
        data = data[: entries or _MAX_LUT_ENTRIES]
        top = 2 ** min(max(bits, 8), 16) - 1
        if invert:
            data = top - data
        scaled = np.rint(np.clip(data, 0, top) * (_LUT_TOP / top)).astype(np.uint16)
        explanation = str(item.get("LUTExplanation", "") or "VOI LUT of the image")[:64]
        return VOILUT(first_mapped_value=first, lut_data=scaled, lut_explanation=explanation)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def _first(value: object) -> float:
    """The first value of a possibly multi-valued DS."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = list(value)[0]  # type: ignore[call-overload]
    return float(value)  # type: ignore[arg-type]


def _voi(ds: Dataset, view: PipelineVoi | None, invert: bool) -> SoftcopyVOILUTTransformation | None:
    """The window the pipeline applied to ``ds``, for the GSPS (``None``: no VOI step)."""
    references = ReferencedImageSequence(referenced_images=[ds])
    source = view.source if view is not None else ("window" if "WindowCenter" in ds else "none")
    window: tuple[float, float, str, str] | None = None
    if source == "voi-lut":
        lut = _file_lut(ds, invert)
        if lut is not None:
            return SoftcopyVOILUTTransformation(voi_luts=[lut], referenced_images=references)
        source = "window"  # the pipeline falls back the same way
    if source == "window" and ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, ""):
        function = str(ds.get("VOILUTFunction", "") or "LINEAR").strip().upper()
        window = (_first(ds.WindowCenter), _first(ds.WindowWidth), function, "window of the image")
    elif view is not None and view.percentile_bounds is not None:
        low, high = view.percentile_bounds
        # LINEAR maps c - 0.5 - (w-1)/2 to black and c - 0.5 + (w-1)/2 to white: low and high
        window = ((low + high) / 2.0 + 0.5, high - low + 1.0, "LINEAR", "AI screening percentile window")
    if window is None:
        return None
    centre, width, function, explanation = window
    if invert:
        return SoftcopyVOILUTTransformation(voi_luts=[_descending_lut(centre, width, function, explanation)],
                                            referenced_images=references)
    return SoftcopyVOILUTTransformation(
        window_center=[centre], window_width=[width], window_explanation=[explanation],  # lists: a str is split
        voi_lut_function=function, referenced_images=references,
    )


def _layer(style: LevelStyle) -> str:
    return _DOUBT_LAYER if style.dashed else _STRICT_LAYER


def _line_style(style: LevelStyle) -> Dataset:
    """A Line Style Sequence item (PS3.3 C.10.5): the level's colour, solid or dashed."""
    item = Dataset()
    item.PatternOnColorCIELabValue = list(CIELabColor.from_rgb(*style.colour).value)
    item.PatternOnOpacity = 1.0
    item.LineThickness = 2.0
    item.LineDashingStyle = "DASHED" if style.dashed else "SOLID"
    if style.dashed:
        item.LinePattern = 0xFF00FF00  # type 1C with DASHED: 8 pixels on, 8 off
    item.ShadowStyle = "OFF"  # and, type 1 all the same, the shadow it does not draw
    item.ShadowOffsetX, item.ShadowOffsetY, item.ShadowOpacity = 0.0, 0.0, 0.0
    item.ShadowColorCIELabValue = list(CIELabColor.from_rgb(0, 0, 0).value)
    return item


def _box_objects(finding: SRFinding, ds: Dataset, style: LevelStyle,
                 index: int) -> tuple[GraphicObject | None, TextObject]:
    """The rectangle (or none, for an image-level finding) and the text of one finding."""
    cols, rows = float(ds.Columns), float(ds.Rows)
    text = finding_text(finding.score, finding.level)
    tracking = f"AI fracture finding {index}"
    if finding.box is None:
        label = TextObject(text_value=f"{text} (whole image)", units=AnnotationUnitsValues.PIXEL,
                           bounding_box=(0.0, 0.0, cols, max(1.0, rows / 12.0)))
        return None, label
    col0, row0, col1, row1 = (max(0.0, finding.box[0]), max(0.0, finding.box[1]),
                              min(cols, finding.box[2]), min(rows, finding.box[3]))
    points = np.array([[col0, row0], [col1, row0], [col1, row1], [col0, row1], [col0, row0]], dtype=np.float64)
    graphic = GraphicObject(graphic_type=GraphicTypeValues.POLYLINE, graphic_data=points,
                            units=AnnotationUnitsValues.PIXEL, tracking_id=tracking,
                            tracking_uid=generate_uid())
    graphic.LineStyleSequence = [_line_style(style)]
    label = TextObject(text_value=text, units=AnnotationUnitsValues.PIXEL, anchor_point=(col0, row0),
                       anchor_point_visible=False)
    return graphic, label


def _annotations(
    by_uid: Mapping[str, Dataset], findings: Sequence[SRFinding], levels: Sequence[str],
    views: Mapping[str, PipelineVoi],
) -> tuple[list[GraphicAnnotation], list[GraphicLayer]]:
    grouped: dict[tuple[str, str], tuple[list[GraphicObject], list[TextObject]]] = {}
    styles: dict[str, LevelStyle] = {}
    for index, finding in enumerate(findings, start=1):
        ds = by_uid.get(finding.source_sop_instance_uid)
        if ds is None:  # a colour image: no GSPS can show it (the SR and SC images do)
            continue
        style = level_style(finding.level, levels)
        styles.setdefault(_layer(style), style)
        graphic, text = _box_objects(finding, ds, style, index)
        graphics, texts = grouped.setdefault((finding.source_sop_instance_uid, _layer(style)), ([], []))
        if graphic is not None:
            graphics.append(graphic)
        texts.append(text)
    layers = [
        GraphicLayer(layer_name=name, order=order, description=styles[name].name[:64],
                     display_color=CIELabColor.from_rgb(*styles[name].colour))
        for order, name in enumerate((_DOUBT_LAYER, _STRICT_LAYER), start=1) if name in styles
    ]
    by_layer = {layer.GraphicLayer: layer for layer in layers}
    annotations = []
    for (uid, layer_name), (graphics, texts) in grouped.items():
        ds = by_uid[uid]
        annotations.append(GraphicAnnotation(
            referenced_images=[ds], graphic_layer=by_layer[layer_name],
            graphic_objects=graphics or None, text_objects=texts,
        ))
    return annotations, layers


def _modality_lut(grey: Sequence[Dataset]) -> ModalityLUTTransformation | None:
    """The rescale of a study with a multi-frame image, given explicitly (``None``: highdicom
    copies it). highdicom 0.28 reads a multi-frame image's rescale from enhanced functional
    groups only; the pipeline reads the top-level Rescale Slope and Intercept, so does this."""
    if all(int(ds.get("NumberOfFrames", 1) or 1) == 1 for ds in grey):
        return None
    rescales = {(float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)) for ds in grey}
    if len(rescales) != 1:
        raise InvalidArgumentError("the study's images have different rescales and one is multi-frame; "
                                   "one GSPS cannot hold their modality LUTs")
    slope, intercept = rescales.pop()
    rescale_type = str(grey[0].get("RescaleType", "") or "US")
    return ModalityLUTTransformation(rescale_intercept=intercept, rescale_slope=slope, rescale_type=rescale_type)


def _sized_like(ds: Dataset, first: Dataset) -> Dataset:
    """A shallow copy of ``ds`` with ``first``'s Rows and Columns (see :func:`_displayed_areas`)."""
    if (ds.Rows, ds.Columns) == (first.Rows, first.Columns):
        return ds
    view = Dataset()
    for element in ds:
        view.add(element)
    view.add_new(0x00280010, "US", int(first.Rows))  # new elements: ``ds``'s stay as they are
    view.add_new(0x00280011, "US", int(first.Columns))
    return view


def _displayed_areas(gsps: Dataset, grey: Sequence[Dataset]) -> None:
    """One Displayed Area Selection per image size, in place.

    highdicom 0.28 accepts only images of one size in a GSPS (its Displayed Area module is the
    first image's), while DICOM lets each Displayed Area Selection item name the images it
    applies to; a radiograph study's views differ in size. So highdicom is handed copies sized
    like the first image, and the module is then written per size with the real images.
    """
    sizes: dict[tuple[int, int], list[Dataset]] = {}
    for ds in grey:
        sizes.setdefault((int(ds.Rows), int(ds.Columns)), []).append(ds)
    if len(sizes) == 1:
        return
    template = gsps.DisplayedAreaSelectionSequence[0]
    items = []
    for (rows, cols), images in sizes.items():
        item = Dataset()
        item.ReferencedImageSequence = ReferencedImageSequence(referenced_images=images)
        for element in template:
            if element.keyword != "DisplayedAreaBottomRightHandCorner":
                item.add(deepcopy(element))
        item.DisplayedAreaBottomRightHandCorner = [cols, rows]
        items.append(item)
    gsps.DisplayedAreaSelectionSequence = items


def build_gsps(
    sources: Sequence[Dataset],
    findings: Sequence[SRFinding],
    *,
    levels: Sequence[str],
    views: Mapping[str, PipelineVoi],
    algorithm: AlgorithmInfo,
    series_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
    sop_instance_uid: str | None = None,
    institution_name: str | None = None,
    manufacturer: str = "fracture-screen",
) -> Dataset:
    """Build the GSPS showing one study's fused findings.

    Args:
        sources: the screened images' headers (one study); patient and study attributes come
            from the first greyscale one. Never modified.
        findings: the fused findings (at least one), each on one of the sources.
        levels: the operating points' level names, most sensitive first (``[]`` for one point).
        views: per SOP Instance UID, how the pipeline windowed the image; an image missing
            here gets the file's first window.
        algorithm: the screener's identification (name, version, intended use).
        series_instance_uid: the GSPS series (new; one per run).
        series_number: its number.
        instance_number: the GSPS's number within the series.
        sop_instance_uid: its UID; a new one when ``None``.
        institution_name: Institution Name of the equipment, when given.
        manufacturer: Manufacturer (and model name) of the equipment.

    Returns:
        The GSPS dataset, ready for :func:`dicom_io.sr.write_sr` (which writes any dataset).

    Raises:
        InvalidArgumentError: no findings, no greyscale source, a finding on an unknown image,
            or a series UID that is a source's.
        SRError: highdicom could not build the presentation state.
    """
    clean = [with_valid_dates(ds) for ds in sources]
    grey = [ds for ds in clean if int(ds.get("SamplesPerPixel", 1) or 1) == 1]
    if not findings:
        raise InvalidArgumentError("a GSPS shows findings: pass at least one (a negative study gets none)")
    if not grey:
        raise InvalidArgumentError("a GSPS needs at least one greyscale source image (SamplesPerPixel 1)")
    known = {str(ds.SOPInstanceUID) for ds in clean}
    for index, finding in enumerate(findings):
        if finding.source_sop_instance_uid not in known:
            raise InvalidArgumentError(
                f"finding {index} is on image {finding.source_sop_instance_uid}, which is not among the sources"
            )
    if any(str(ds.get("SeriesInstanceUID", "")) == series_instance_uid for ds in clean):
        raise InvalidArgumentError("series_instance_uid is a source's series; the GSPS needs a new one")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in grey}
    monochrome1 = [str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1" for ds in grey]
    mixed = any(monochrome1) and not all(monochrome1)
    shape = PresentationLUTShapeValues.INVERSE if all(monochrome1) else PresentationLUTShapeValues.IDENTITY
    try:
        annotations, layers = _annotations(by_uid, findings, levels, views)
        vois = [v for ds, m1 in zip(grey, monochrome1)
                if (v := _voi(ds, views.get(str(ds.SOPInstanceUID)), invert=mixed and m1)) is not None]
        gsps = GrayscaleSoftcopyPresentationState(
            referenced_images=[evidence_header(grey[0]), *(_sized_like(ds, grey[0]) for ds in grey[1:])],
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=sop_instance_uid or generate_uid(),
            instance_number=instance_number,
            manufacturer=manufacturer,
            manufacturer_model_name=algorithm.name,
            software_versions=f"{algorithm.name} {algorithm.version}"[:64],
            device_serial_number=algorithm.operating_point_id[:64],
            content_label=CONTENT_LABEL,
            content_description=presentation_description(algorithm.intended_use),
            graphic_annotations=annotations or None,
            graphic_layers=layers or None,
            institution_name=institution_name,
            content_creator_name=f"{algorithm.name.replace('^', ' ')[:60]}^",  # one component: a device
            voi_lut_transformations=vois or None,
            modality_lut_transformation=_modality_lut(grey),
            presentation_lut_transformation=PresentationLUTTransformation(presentation_lut_shape=shape),
            series_description=SERIES_DESCRIPTION,
        )
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        detail = f"{type(exc).__name__}: {redact_names(str(exc), clean)}"
        raise SRError(f"cannot build the GSPS of study {clean[0].get('StudyInstanceUID', '?')}: {detail}") from exc
    _displayed_areas(gsps, grey)
    copy_series_context(gsps, grey)
    return gsps
