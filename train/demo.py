"""The demo members: tiny PaliGemma classifier, PaliGemma detector and DETR, trained on the CPU.

What :func:`train_demo` does, seeded end to end (every step is the project's own code):

1. writes a phantom training archive (:mod:`dicom_io.phantom`, ``train_seed``) and its labels,
   or one per style of a mix (``rods+randomised``, :meth:`DemoOptions.train_phantoms`);
2. prepares it (:func:`train.prepare.prepare_dataset`: the pixel pipeline, JSONL, a patient
   split into train and val, the manifest);
3. trains each member with its recipe and its example config (``train/configs/demo-*.toml``,
   each sized in optimizer *steps*, so a busy machine takes longer but learns the same), then
   the refiner stage (``demo-refiner.toml``) that corrects the detectors' boxes. The PaliGemma
   detector starts from the ``toy-det`` stage (:data:`DEMO_TOY`): the same tiny detector trained
   first on a toy phantom (bright shapes on noise, ``tiny-detector.toml``), a curriculum from easy
   to subtle. Started from scratch its boxes matched at most 0.06 of the validation boxes in
   any try (DEMO.md's ablation);
4. copies each best checkpoint into ``<models_dir>/<name>/`` and writes a site config naming
   them (``site.toml`` beside ``models_dir``), with the refiner on both detectors.

Choosing the operating point and measuring the members on a fresh phantom set need the
screener's member loading and tuning (:mod:`screen`), so that part lives in
:mod:`screen.commands.demo`; the one documented command runs both::

    screen train-demo --out sample_data

Work files (archives, prepared data, run folders with metrics and curves) go to ``work_dir``;
an interrupted demo resumes: finished members are kept, and a run resumes from its ``last/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from dicom_io.phantom import PhantomConfig, write_phantom_archive
from dicom_io.tables import LABELS, read_table, write_table
from ensembles.checkpoint import read_member_spec, write_member_spec
from train.train_config import load_train_config
from train.errors import TrainError
from train.prepare import PrepareOptions, prepare_dataset

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DONE_FILE = "demo-run.json"


@dataclass(frozen=True)
class DemoMember:
    """One demo member: its site name, recipe, member kind and example config file."""

    name: str
    recipe: str
    kind: str
    config: str


DEMO_MEMBERS: tuple[DemoMember, ...] = (
    DemoMember("pg-cls", "classifier", "paligemma-classifier", "demo-classifier.toml"),
    DemoMember("pg-det", "detector", "paligemma-detector", "demo-detector.toml"),
    DemoMember("detr", "detr", "detr", "demo-detr.toml"),
)


DEMO_REFINER = DemoMember("refiner", "refiner", "refiner", "demo-refiner.toml")
"""The second stage: a crop regressor the site config puts on the detectors' boxes."""

#: The config key of each recipe that names a checkpoint to fine-tune (``DemoOptions.init_from``).
BASE_KEYS: Mapping[str, str] = {"classifier": "paligemma.base", "detector": "paligemma.base",
                                "detr": "detr.base", "refiner": "refiner.base"}

DEMO_TOY = DemoMember("toy-det", "detector", "paligemma-detector", "tiny-detector.toml")
"""The detector's first lesson: the tiny detector trained on the toy phantom, which ``pg-det``
starts from (``DemoOptions.toy_first``); kept in the work folder, never a site member."""

TOY_STAGE_SETTINGS: Mapping[str, Any] = {"loss.patch_box_weight": 0.0, "paligemma.box_order": "as-prepared"}
"""The toy stage's departures from ``tiny-detector.toml`` (a ``--set toy-det:KEY=VALUE`` wins):
the dense box loss and the reading order, which the config has since 2026-12-07, are off. They
localise the toy better (``bench.learnability``: 0.843-0.873 of the held-out boxes at IoU >= 0.5
against 0.783), but the phantom detector started worse from such a toy stage: in DEMO.md's
ablation (600 steps, the same data), 0.047 and 0.094 of the validation boxes against 0.200 from
a toy stage without them, trained the same day (one run each). The committed ``pg-det`` started from a toy
stage without them too."""

TOY_STUDIES = 1200
"""Toy studies of the toy stage and of ``bench.learnability`` (about 1,700 training images)."""
TOY_SEED = 11
TOY_TWO_SHAPES = 0.1
"""Share of the toy's images with a shape that hold two."""
TOY_POSITIVE = 0.75
"""Share of the toy's studies with shapes (the rest are empty: the detector must say so)."""

DETECTOR_MEMBERS: tuple[str, ...] = ("pg-det", "detr")
"""The demo members whose boxes the refiner corrects."""


MIX_SEPARATOR = "+"
"""Joins the styles of a training mix (``DemoOptions.train_style``)."""
MIX_SEED_STEP = 1000
"""The seed of the i-th style of a training mix is ``train_seed + MIX_SEED_STEP * i``."""


class DemoError(TrainError):
    """The demo cannot run as asked; the message says the fix."""


@dataclass(frozen=True)
class DemoOptions:
    """Everything the demo chooses (the defaults are the committed demo's).

    Attributes:
        models_dir: where the member checkpoints go (``<models_dir>/<name>/``).
        work_dir: archives, prepared data and run folders.
        train_studies: studies in the phantom training archive (per style of a mix).
        train_seed: seed of the training archive and of the patient split.
        eval_studies: studies in the fresh phantom evaluation archive.
        eval_seed: its seed (must differ from ``train_seed``).
        val_fraction: share of patients held out for validation (early stopping, tuning).
        phantom_size: inclusive range of the phantom images' rows and columns.
        train_style: the phantom style the members learn from (``randomised``: rendering and
            parameters drawn from wide ranges, so they learn the fracture, not one renderer), or
            a mix of styles joined by ``+`` (``rods+randomised``): one archive of
            ``train_studies`` studies per style, each with its own seed
            (:meth:`train_phantoms`), prepared and split by patient as one set.
        eval_styles: the styles of the fresh evaluation sets, each drawn with ``eval_seed``:
            the training style (in distribution) and ``shifted`` (ranges fixed before training,
            outside what it covered; ``shifted-2`` is a second such style); the first one
            chooses nothing, all are reported.
        members: names of the members to train (of :data:`DEMO_MEMBERS`).
        configs_dir: where the ``demo-*.toml`` configs are.
        overrides: per member name, dotted config overrides (``{"detr": {"train.max_steps": 2}}``).
        workers: decode processes for phantom preparation and evaluation.
        retrain: train again, from the start, even when ``models_dir`` already holds a member
            from this demo (an earlier run's ``last/`` is not resumed).
        refiner: train the refiner stage and put it on the detectors in ``site.toml``.
        refiner_iterations: refinement passes per box in ``site.toml``.
        init_from: a models folder (``<init_from>/<name>/``, e.g. members a demo trained on an
            easier style) each member is fine-tuned from instead of starting from scratch: a
            curriculum from easy to varied renderings. ``None``: from scratch.
        toy_first: train the ``toy-det`` stage on the toy phantom first and start ``pg-det``
            from it (when ``pg-det`` is trained and ``init_from`` is not given).
        toy_studies: studies in the toy phantom archive.
        toy_seed: its seed (also of its patient split).
        symmetries: ``pg-det``'s ``symmetries`` option in ``site.toml`` (1, 2, 4 or 8): its
            boxes decoded under that many of the square's symmetries and placed at their median.
    """

    models_dir: Path = Path("sample_data/models")
    work_dir: Path = Path("demo-work")
    train_studies: int = 800
    train_seed: int = 20261203
    eval_studies: int = 300
    eval_seed: int = 20261204
    val_fraction: float = 0.15
    phantom_size: tuple[int, int] = (384, 768)
    train_style: str = "randomised"
    eval_styles: tuple[str, ...] = ("randomised", "shifted", "shifted-2")
    members: tuple[str, ...] = tuple(m.name for m in DEMO_MEMBERS)
    configs_dir: Path = CONFIG_DIR
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    workers: int = 2
    retrain: bool = False
    refiner: bool = True
    refiner_iterations: int = 2
    init_from: Path | None = None
    toy_first: bool = True
    toy_studies: int = TOY_STUDIES
    toy_seed: int = TOY_SEED
    symmetries: int = 8

    def __post_init__(self) -> None:
        known = {m.name for m in DEMO_MEMBERS}
        unknown = sorted(set(self.members) - known)
        if unknown or not self.members:
            raise DemoError(f"demo members must be among {', '.join(sorted(known))}, got {list(self.members)}")
        stages = sorted(known | {DEMO_REFINER.name, DEMO_TOY.name})
        stray = sorted(set(self.overrides) - set(stages))
        if stray:
            raise DemoError(f"overrides name no demo stage: {', '.join(stray)} (stages: {', '.join(stages)})")
        for name in ("train_studies", "eval_studies", "toy_studies"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 4:
                raise DemoError(f"{name} must be an integer >= 4, got {value!r}")
        if self.train_seed == self.eval_seed:
            raise DemoError(
                f"eval_seed must differ from train_seed ({self.train_seed}): the members are "
                "judged on a phantom set they never saw"
            )
        from dicom_io.phantom.config import STYLES
        from dicom_io.phantom.style_ranges import HELD_OUT_STYLES

        allowed = [s for s in STYLES if s != "toy"]
        for style in (*self.train_styles, *self.eval_styles):
            if style not in allowed:
                raise DemoError(f"demo phantom styles must be among {', '.join(allowed)}; got {style!r}")
        held_out = [style for style in self.train_styles if style in HELD_OUT_STYLES]
        if held_out:
            raise DemoError(f"{held_out[0]!r} is a measurement style (never trained on: a figure on it is "
                            f"only unbiased while no member learned it); train on "
                            f"{', '.join(s for s in allowed if s not in HELD_OUT_STYLES)}")
        if len(set(self.train_styles)) != len(self.train_styles):
            raise DemoError(f"a training mix names each style once; got {self.train_style!r}")
        clash = [style for style, seed in self.train_phantoms() if seed == self.eval_seed]
        if clash:
            raise DemoError(f"the training phantom of style {clash[0]!r} would be drawn with eval_seed "
                            f"{self.eval_seed}: choose another train_seed or eval_seed")
        if not self.eval_styles or len(set(self.eval_styles)) != len(self.eval_styles):
            raise DemoError(f"eval_styles must name at least one style, each once; got {list(self.eval_styles)}")
        if self.init_from is not None and Path(self.init_from).resolve() == Path(self.models_dir).resolve():
            raise DemoError(f"init_from {self.init_from} is the folder the demo writes its members to; "
                            "copy the members to start from elsewhere first")
        from ensembles.symmetry import COUNTS

        if isinstance(self.symmetries, bool) or self.symmetries not in COUNTS:
            raise DemoError(f"symmetries must be one of {', '.join(map(str, COUNTS))}, got {self.symmetries!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise DemoError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")

    @property
    def train_styles(self) -> tuple[str, ...]:
        """The styles of the training archive: one, or those of a ``+`` mix, in order."""
        return tuple(part.strip() for part in self.train_style.split(MIX_SEPARATOR))

    def train_phantoms(self) -> list[tuple[str, int]]:
        """``(style, seed)`` of each training archive: ``train_seed`` for the first style, then
        ``train_seed + MIX_SEED_STEP * i`` (each style of a mix draws other patients)."""
        return [(style, self.train_seed + MIX_SEED_STEP * index) for index, style in enumerate(self.train_styles)]

    def selected(self) -> list[DemoMember]:
        return [m for m in DEMO_MEMBERS if m.name in self.members]

    @property
    def trains_toy(self) -> bool:
        """Whether the ``toy-det`` stage runs (``pg-det`` starts from it)."""
        return self.toy_first and "pg-det" in self.members and self.init_from is None

    def stages(self) -> list[DemoMember]:
        """What the demo trains, in order: the toy stage if ``pg-det`` starts from it, the
        selected members, then the refiner if wanted."""
        return ([DEMO_TOY] if self.trains_toy else []) + self.selected() + ([DEMO_REFINER] if self.refiner else [])


def toy_phantom_config(studies: int = TOY_STUDIES, seed: int = TOY_SEED, *,
                       two_shapes: float = TOY_TWO_SHAPES,
                       size: tuple[int, int] | None = None) -> PhantomConfig:
    """The toy phantom (one or two bright rectangles or ellipses on noise, a quarter of the
    studies empty): the toy stage's and ``bench.learnability``'s."""
    config = PhantomConfig(n_studies=studies, seed=seed, style="toy", positive_fraction=TOY_POSITIVE,
                           two_fracture_fraction=two_shapes)
    return config if size is None else dataclasses.replace(config, size_range=size)


def make_phantom(folder: Path, studies: int, seed: int,
                 size: tuple[int, int] = (384, 768), style: str = "rods") -> tuple[Path, Path]:
    """A phantom archive and labels CSV of ``style`` in ``folder`` (reused when the same one is there)."""
    return write_phantom(folder, PhantomConfig(n_studies=studies, seed=seed, size_range=size, style=style))


def write_phantom(folder: Path, config: PhantomConfig, *, archive: Path | None = None) -> tuple[Path, Path]:
    """``folder/archive`` (or ``archive``) and ``folder/labels.csv`` of ``config``, reused when
    ``folder`` already holds that very phantom (its fingerprint is stamped in ``phantom.json``)."""
    archive, labels = archive or folder / "archive", folder / "labels.csv"
    style, seed = config.style, config.seed
    stamp = folder / "phantom.json"
    wanted = {"fingerprint": config.fingerprint()}
    if stamp.is_file() and labels.is_file() and json.loads(stamp.read_text()) == wanted:
        return archive, labels
    folder.mkdir(parents=True, exist_ok=True)
    summary = write_phantom_archive(archive, labels, config, overwrite=True)
    stamp.write_text(json.dumps(wanted), encoding="utf-8")
    logger.info("phantom %s seed %d: %d images in %d studies (%d positive)", style, seed, summary.n_images,
                summary.n_studies, summary.n_positive_studies)
    return archive, labels


def prepare_demo_data(options: DemoOptions) -> Path:
    """The prepared training data (train and val splits) of the demo's training archive: one
    style's, or one folder of a mix's archives (``train-mix/archive/<style>/``) with their labels
    joined, split by patient together."""
    phantoms = options.train_phantoms()
    if len(phantoms) == 1:
        archive, labels = make_phantom(options.work_dir / "train-phantom", options.train_studies,
                                       options.train_seed, options.phantom_size, options.train_style)
        return _prepared(archive, labels, options.work_dir / "data", options.train_seed, options)
    mix = options.work_dir / "train-mix"
    tables = []
    for style, seed in phantoms:
        config = PhantomConfig(n_studies=options.train_studies, seed=seed, size_range=options.phantom_size,
                               style=style)
        _, labels = write_phantom(mix / style, config, archive=mix / "archive" / style)
        tables.append(read_table(labels, LABELS))
    _check_disjoint_patients([style for style, _ in phantoms], tables)
    joined = write_table(mix / "labels.csv", LABELS, pd.concat(tables, ignore_index=True))
    return _prepared(mix / "archive", joined, options.work_dir / "data", options.train_seed, options)


def _check_disjoint_patients(styles: list[str], tables: list[pd.DataFrame]) -> None:
    """Refuse a mix whose archives share a PatientID: two phantom patients under one ID would be
    one patient to the split (and to the ingest's checks that a patient is one person)."""
    seen: dict[str, str] = {}
    for style, table in zip(styles, tables):
        for patient in sorted(set(table["PatientID"])):
            if patient in seen and seen[patient] != style:
                raise DemoError(f"the {seen[patient]} and {style} training phantoms share PatientID "
                                f"{patient}: choose another train_seed")
            seen[patient] = style


def prepare_toy_data(options: DemoOptions) -> Path:
    """The prepared data (train and val splits) of the toy stage's toy phantom."""
    archive, labels = write_phantom(options.work_dir / "toy-phantom", toy_phantom_config(
        options.toy_studies, options.toy_seed, size=options.phantom_size))
    return _prepared(archive, labels, options.work_dir / "toy-data", options.toy_seed, options)


def _prepared(archive: Path, labels: Path, data: Path, seed: int, options: DemoOptions) -> Path:
    """``screen prepare`` of ``archive`` into ``data`` (kept when it was prepared from these labels)."""
    if (data / "manifest.json").is_file():
        manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
        same_labels = manifest.get("labels_sha256") == hashlib.sha256(labels.read_bytes()).hexdigest()
        if same_labels and manifest.get("seed") == seed and (data / "train" / "boxes.jsonl").is_file():
            return data
    summary = prepare_dataset(archive, labels, data, PrepareOptions(
        seed=seed, val=options.val_fraction, test=0.0, workers=options.workers, overwrite=True))
    logger.info("prepared %s: %s", data, summary.splits)
    return data


def _replace_tree(source: Path, target: Path) -> None:
    """Copy ``source`` over ``target`` (a temporary sibling renamed into place)."""
    tmp = target.with_name(f".{target.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)


def _declare_demo(checkpoint: Path) -> None:
    """Mark a demo checkpoint ``intended_use = "demo"``: phantom-trained, never for patients."""
    spec = read_member_spec(checkpoint)
    write_member_spec(checkpoint, spec.replace(intended_use="demo"))


def stage_home(member: DemoMember, options: DemoOptions) -> Path:
    """The folder a stage's checkpoint goes to: ``models_dir`` for members and the refiner, the
    work folder for the toy stage (a lesson, not a site member)."""
    return options.work_dir if member.name == DEMO_TOY.name else options.models_dir


def train_member(member: DemoMember, data: Path, options: DemoOptions, *,
                 start: Path | None = None, start_name: str | None = None) -> dict[str, Any]:
    """Train one stage with its demo config; copy its best checkpoint to :func:`stage_home`.

    Args:
        start: a checkpoint to fine-tune from (``<init_from>/<name>`` or the toy stage's), set
            as the recipe's base; ``None``: from scratch.
        start_name: how the record names ``start`` (default: its path).

    Returns:
        What the run did: name, recipe, checkpoint, seconds, steps and its best metric.
    """
    from train.recipes import get_recipe

    config_file = options.configs_dir / member.config
    overrides: dict[str, Any] = {"data": str(data), "out": str(options.work_dir / "runs" / member.name)}
    if options.retrain:  # from the start: resuming a finished run's last/ would train nothing
        overrides["train.resume"] = False
    if start is not None:
        if not (Path(start) / "member.json").is_file():
            raise DemoError(f"{member.name} starts from {start}, which holds no member ({start}/member.json)")
        overrides[BASE_KEYS[member.recipe]] = str(Path(start).resolve())
    if member is DEMO_TOY:
        overrides.update(TOY_STAGE_SETTINGS)
    overrides.update(options.overrides.get(member.name, {}))
    config = load_train_config(config_file, recipe=member.recipe, overrides=overrides)
    started = time.monotonic()
    best = get_recipe(member.recipe)(config)
    seconds = time.monotonic() - started
    home = stage_home(member, options)
    target = home / member.name
    home.mkdir(parents=True, exist_ok=True)
    _replace_tree(best, target)
    _declare_demo(target)
    history = _history(config.out / "metrics.csv")
    record = {
        "name": member.name, "recipe": member.recipe, "kind": member.kind,
        "config": _shown(config_file), "checkpoint": str(target), "seconds": round(seconds, 1),
        "steps": int(history[-1]["step"]) if history else 0, "epochs": len(history),
        "monitor": config.train.monitor,
        "best": _best(history, config.train.monitor, config.train.monitor_mode),
        "init_from": (start_name or _shown(Path(start))) if start is not None else None,
        "init_weights": weights_digest(Path(start)) if start is not None else None,
    }
    _done_file(member, options).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record


def weights_digest(checkpoint: Path) -> str:
    """The first 12 hex digits of the sha256 of a checkpoint's ``*.safetensors`` files (sorted by
    name): which weights a stage started from, whatever folder they were copied to (compare
    with ``git show <commit>:sample_data/models/<name>/...``)."""
    digest = hashlib.sha256()
    for path in sorted(Path(checkpoint).glob("*.safetensors")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _shown(path: Path) -> str:
    """``path`` relative to the project when it is inside it (records name no machine's folders)."""
    project = CONFIG_DIR.parents[1]
    try:
        return Path(path).resolve().relative_to(project).as_posix()
    except ValueError:
        return str(path)


def _best(history: list[dict[str, Any]], monitor: str, mode: str) -> float | None:
    """The best value of the monitored metric over the run's epochs (``None`` if never measured)."""
    values = [float(r[monitor]) for r in history if r.get(monitor) not in (None, "")]
    values = [v for v in values if v == v]  # drop NaN
    if not values:
        return None
    return min(values) if mode == "min" else max(values)


def _history(path: Path) -> list[dict[str, Any]]:
    from dicom_io.tables import TRAINING_METRICS, read_table, records

    if not path.is_file():
        return []
    return records(read_table(path, TRAINING_METRICS, error=DemoError))


def site_config_text(members: Sequence[DemoMember], models_dir: Path, site_dir: Path,
                     operating_point: str = "op.json", *, refiner: bool = False,
                     refiner_iterations: int = 2, symmetries: int = 1) -> str:
    """The site config TOML that runs the demo members (paths relative to ``site_dir``); with
    ``refiner``, ``<models_dir>/refiner`` corrects the detectors' boxes; ``symmetries`` > 1
    sets the PaliGemma detector's ``symmetries`` option (its boxes placed by the median of that
    many decodes under the square's symmetries)."""
    lines = [
        "# The embedded default of `screen run` (no --config): tiny members trained on the phantom by",
        "#   screen train-demo --out sample_data",
        "# Run it with: screen run sample_data/archive --config sample_data/site.toml --out OUT",
        "schema_version = 1",
        f'operating_point = "{operating_point}"',
        "",
        "[run]",
        'device = "cpu"',
        "workers = 2",
        "batch_size = 8",
    ]
    relative = Path(_relative(models_dir, site_dir))
    for member in members:
        lines += ["", f"[members.{member.name}]", f'kind = "{member.kind}"',
                  f'checkpoint = "{(relative / member.name).as_posix()}"']
        if member.kind == "paligemma-detector" and symmetries > 1:
            lines.append(f"options = {{ symmetries = {symmetries} }}   # boxes: median of {symmetries} decodes "
                         "under the square's symmetries")
        if refiner and member.name in DETECTOR_MEMBERS:
            lines += [f'refiner = "{(relative / DEMO_REFINER.name).as_posix()}"',
                      f"refiner_iterations = {refiner_iterations}"]
    lines += ["", "[output]", 'patient_id = "hash"                  # a keyed 128-bit pseudonym in studies.csv']
    return "\n".join(lines) + "\n"


def _relative(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(Path(path).resolve(), Path(start).resolve())


def train_demo(options: DemoOptions, *, on_member: Callable[[dict[str, Any]], None] | None = None
               ) -> tuple[Path, list[dict[str, Any]]]:
    """Steps 1-4 of the module docstring.

    Returns:
        The prepared data folder and one record per stage (see :func:`train_member`), the toy
        stage first when it runs; a stage whose checkpoint this demo already wrote is kept
        unless ``retrain``.
    """
    _check_starts(options)
    data = prepare_demo_data(options)
    records = []
    toy: Path | None = None
    for member in options.stages():
        if _kept(member, options):
            record = json.loads(_done_file(member, options).read_text(encoding="utf-8"))
            logger.info("keeping %s trained earlier (%s)", member.name, record.get("checkpoint"))
        else:
            logger.info("training %s (%s recipe, %s)", member.name, member.recipe, member.config)
            stage_data = prepare_toy_data(options) if member is DEMO_TOY else data
            start = _start(member, options, toy)
            record = train_member(member, stage_data, options, start=start,
                                  start_name=DEMO_TOY.name if start is not None and start == toy else None)
        if member is DEMO_TOY:  # where this demo keeps it, whatever folder the record was written from
            toy = stage_home(member, options) / member.name
        records.append(record)
        if on_member is not None:
            on_member(record)
    return data, records


def _kept(member: DemoMember, options: DemoOptions) -> bool:
    """Whether this demo already wrote ``member``'s stage and keeps it (not ``retrain``)."""
    return (not options.retrain and _done_file(member, options).is_file()
            and (stage_home(member, options) / member.name / "member.json").is_file())


def _done_file(member: DemoMember, options: DemoOptions) -> Path:
    """The record a finished stage leaves beside its checkpoint (:func:`train_member` writes it)."""
    return stage_home(member, options) / f".{member.name}.{DONE_FILE}"


def _check_starts(options: DemoOptions) -> None:
    """Refuse, before any phantom is drawn or stage trained, an ``init_from`` folder that lacks a
    member a stage still to train starts from (found otherwise only when that stage starts,
    after the earlier ones trained)."""
    if options.init_from is None:
        return
    missing = [m.name for m in options.stages() if m is not DEMO_TOY and not _kept(m, options)
               and not (Path(options.init_from) / m.name / "member.json").is_file()]
    if missing:
        raise DemoError(f"init_from {options.init_from} holds no member for {', '.join(missing)} "
                        f"(each stage starts from {options.init_from}/<name>/member.json)")


def _start(member: DemoMember, options: DemoOptions, toy: Path | None) -> Path | None:
    """What a stage fine-tunes from: ``<init_from>/<name>``, the toy stage for ``pg-det``, or
    nothing (from scratch)."""
    if options.init_from is not None and member is not DEMO_TOY:
        return Path(options.init_from) / member.name  # train_member refuses it when no member is there
    if member.name == "pg-det" and toy is not None:
        return toy
    return None


__all__ = ["BASE_KEYS", "CONFIG_DIR", "DEMO_MEMBERS", "DEMO_REFINER", "DEMO_TOY", "DETECTOR_MEMBERS", "DemoError",
           "DemoMember", "DemoOptions", "MIX_SEED_STEP", "MIX_SEPARATOR", "TOY_SEED", "TOY_STAGE_SETTINGS", "TOY_STUDIES", "TOY_TWO_SHAPES", "make_phantom",
           "prepare_demo_data", "prepare_toy_data", "site_config_text", "stage_home", "toy_phantom_config",
           "train_demo", "train_member", "weights_digest", "write_phantom"]
