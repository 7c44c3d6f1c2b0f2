"""The site config: one TOML file that says what ``screen run`` runs, where, and what it writes.

Example (``sample_data/site.toml`` is the embedded default)::

    # screen run /pacs/export --config site.toml --out /srv/screen
    operating_point = "op.json"          # relative paths are relative to this file

    [run]
    device = "cuda"                      # "cpu" | "cuda" | "cuda:1"
    workers = 4                          # decode processes running ahead of the models
    batch_size = 16                      # images per member forward pass (members may override)

    [members.pg-cls]                     # the table name is the member's name in outputs
    kind = "paligemma-classifier"
    checkpoint = "/models/pg2-3b-cls"    # a local save_pretrained directory, never a hub id
    dtype = "bfloat16"                   # optional; default bf16 on CUDA, float32 on CPU
    quantization = "8bit"                # optional: "8bit" | "4bit"

    [selection]                          # dicom_io.select.SelectionRules fields
    modalities = ["CR", "DX", "DR"]

    [output]
    patient_id = "hash"                  # "include" | "hash" (salted SHA-256) | "omit"
    write_sr = true

    [scope]                              # the studies the members are fit for (intended use)
    body_parts = ["SHOULDER", "ARM"]     # others are "out-of-scope", never "negative"
    require_body_part = true
    min_patient_age = 18                 # years; 0 = no minimum

Every key is checked: an unknown key or a bad value raises :class:`ConfigError` naming the key,
the value and the fix.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from dicom_io.select import SelectionConfigError, SelectionRules
from screen.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: The embedded default: demo members and operating point committed in ``sample_data/``.
DEFAULT_CONFIG = PROJECT_ROOT / "sample_data" / "site.toml"

PATIENT_ID_MODES = ("include", "hash", "omit")
QUANTIZATIONS = ("8bit", "4bit")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class MemberConfig:
    """One ensemble member to load.

    Attributes:
        name: the member's name in outputs, thresholds and the operating point.
        kind: registry kind (``screen models`` lists them).
        checkpoint: local checkpoint directory (``save_pretrained`` + ``member.json``).
        batch_size: images per forward pass; ``None`` uses ``[run] batch_size``.
        dtype: ``None`` for the policy default (bf16 on CUDA, float32 on CPU).
        quantization: ``None``, ``"8bit"`` or ``"4bit"`` (bitsandbytes; PaliGemma members).
        options: further keyword options passed to the member's ``from_checkpoint``.
        refiner: a ``refiner`` checkpoint directory whose crop regressor corrects this
            detector's boxes before fusion (the second stage; ``None``: boxes as predicted).
        refiner_iterations: refinement passes per box.
    """

    name: str
    kind: str
    checkpoint: Path
    batch_size: int | None = None
    dtype: str | None = None
    quantization: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    refiner: Path | None = None
    refiner_iterations: int = 1


@dataclass(frozen=True)
class RunSettings:
    """``[run]``: how the batch runner uses the machine.

    Attributes:
        device: torch device for the members.
        workers: decode worker processes (always child processes, so a file that hangs or crashes a
            decoder times out or fails alone, even with 1).
        batch_size: default images per forward pass.
        decode_timeout_s: seconds one image may take to decode before it is failed.
        max_attempts: nights a failed study is tried with the same content; after that it is
            not retried silently but listed as needing attention every night (exit 1).
    """

    device: str = "cpu"
    workers: int = 2
    batch_size: int = 8
    decode_timeout_s: float = 300.0
    max_attempts: int = 3


DEFAULT_SCOPE_BODY_PARTS: tuple[str, ...] = ("SHOULDER", "ARM")
"""What the demo members (and the method's shoulder radiographs) cover."""


@dataclass(frozen=True)
class ScopeSettings:
    """``[scope]``: the studies the members are fit for (their intended use). A study outside
    it is ``out-of-scope`` with the reason, never screened and never called negative.

    Attributes:
        body_parts: BodyPartExamined values (upper case) the members were trained on; every
            screenable view must have one. Empty: any body part.
        require_body_part: a view without BodyPartExamined makes its study out of scope.
        min_patient_age: youngest patient age in years (PatientAge, else StudyDate minus
            PatientBirthDate); 0: no minimum. With a minimum, an unknown age is out of scope.
    """

    body_parts: tuple[str, ...] = DEFAULT_SCOPE_BODY_PARTS
    require_body_part: bool = True
    min_patient_age: float = 0.0


@dataclass(frozen=True)
class OutputSettings:
    """``[output]``: what the outputs may contain.

    Attributes:
        patient_id: PatientID in ``studies.csv``: ``"include"``, ``"hash"`` (a keyed 128-bit
            pseudonym, :mod:`screen.id_key`) or ``"omit"``. Patient names are never written to
            CSV or logs. With ``hash`` or ``omit``, ``scan.csv`` holds no source paths either
            (archives are often laid out by PatientID): a keyed pseudonym of each path instead.
        accession: include AccessionNumber in ``studies.csv``.
        write_sr: write a DICOM SR per screened study.
        sr_series_number: SeriesNumber of the SR series (one new series per run).
        institution_name: optional InstitutionName for the SR's equipment module.
        id_key_file: the file holding the site's identifier key (mode 0600, outside every output
            folder); unset: ``$FRACTURE_SCREEN_SALT``, else ``~/.config/fracture-screen/id-key``.
        file_mode: permissions of the files the run writes (octal text, ``"0600"`` or
            ``"0640"``...): they hold identifiers and SRs with patient names.
    """

    patient_id: str = "hash"
    accession: bool = True
    write_sr: bool = True
    sr_series_number: int = 9901
    institution_name: str | None = None
    id_key_file: str | None = None
    file_mode: str = "0600"

    @property
    def mode_bits(self) -> int:
        return int(self.file_mode, 8)


@dataclass(frozen=True)
class SiteConfig:
    """The whole site config, with paths resolved against the config file's folder."""

    members: tuple[MemberConfig, ...]
    operating_point: Path | None  # None before tuning: screen eval uses member.json thresholds
    run: RunSettings = RunSettings()
    selection: SelectionRules = SelectionRules()
    output: OutputSettings = OutputSettings()
    source: Path | None = None
    scope: ScopeSettings = ScopeSettings()


_TOP_KEYS = ("operating_point", "run", "members", "selection", "output", "scope")


def _check_keys(where: str, data: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; valid keys: {', '.join(allowed)}")


def _typed(where: str, key: str, value: Any, kind: type | tuple[type, ...], expected: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{where}.{key} must be {expected}, got {value!r}")
    return value


def _dataclass_from(where: str, cls: type, data: Mapping[str, Any]) -> Any:
    """Build a flat settings dataclass, checking keys and the type of each value."""
    names = tuple(f.name for f in fields(cls))
    _check_keys(f"[{where}]", data, names)
    defaults = cls()
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        default = getattr(defaults, key)
        if isinstance(default, bool):
            kwargs[key] = _typed(where, key, value, bool, "true or false")
        elif isinstance(default, int):
            kwargs[key] = _typed(where, key, value, int, "an integer")
        elif isinstance(default, float):
            kwargs[key] = float(_typed(where, key, value, (int, float), "a number"))
        else:
            kwargs[key] = _typed(where, key, value, str, "a string")
    return cls(**kwargs)


def _member(name: str, data: Any, base: Path) -> MemberConfig:
    where = f"[members.{name}]"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table with kind and checkpoint")
    _check_keys(where, data, ("kind", "checkpoint", "batch_size", "dtype", "quantization", "options",
                              "refiner", "refiner_iterations"))
    for required in ("kind", "checkpoint"):
        if required not in data:
            raise ConfigError(f"{where} needs {required!r} (e.g. kind = \"detr\", checkpoint = \"models/detr\")")
    kind = _typed(where, "kind", data["kind"], str, "a member kind")
    checkpoint = Path(_typed(where, "checkpoint", data["checkpoint"], str, "a local directory path"))
    if not checkpoint.is_absolute():
        checkpoint = base / checkpoint
    if not checkpoint.is_dir():
        raise ConfigError(
            f"{where} checkpoint {str(checkpoint)!r} is not a directory; give the local folder holding "
            "member.json and the safetensors weights (hub ids are never used at run time)"
        )
    batch_size = data.get("batch_size")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise ConfigError(f"{where}.batch_size must be a positive integer, got {batch_size!r}")
    dtype = data.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"{where}.dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    quantization = data.get("quantization")
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ConfigError(f"{where}.quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    options = data.get("options", {})
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}.options must be a table")
    refiner: Path | None = None
    if "refiner" in data:
        refiner = Path(_typed(where, "refiner", data["refiner"], str, "a local directory path"))
        refiner = refiner if refiner.is_absolute() else base / refiner
        if not (refiner / "member.json").is_file():
            raise ConfigError(f"{where}.refiner {str(refiner)!r} is not a refiner checkpoint (no member.json there)")
    iterations = data.get("refiner_iterations", 1)
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise ConfigError(f"{where}.refiner_iterations must be a positive integer, got {iterations!r}")
    if "refiner_iterations" in data and refiner is None:
        raise ConfigError(f"{where}.refiner_iterations needs a refiner = \"<checkpoint dir>\"")
    return MemberConfig(name, kind, checkpoint, batch_size, dtype, quantization, dict(options),
                        refiner, iterations)


def parse_site_config(data: Mapping[str, Any], base: Path, source: Path | None = None) -> SiteConfig:
    """Validate a parsed TOML mapping; relative paths resolve against ``base``."""
    _check_keys("the site config", data, _TOP_KEYS)
    members_data = data.get("members")
    if not isinstance(members_data, Mapping) or not members_data:
        raise ConfigError("the site config needs at least one [members.NAME] table with kind and checkpoint")
    members = tuple(_member(name, value, base) for name, value in members_data.items())
    op_path: Path | None = None
    if "operating_point" in data:  # optional until tuned; screen run refuses to screen without one
        op_path = Path(_typed("site config", "operating_point", data["operating_point"], str, "a path"))
        if not op_path.is_absolute():
            op_path = base / op_path
    run = _dataclass_from("run", RunSettings, data.get("run", {}))
    if run.workers < 1 or run.batch_size < 1 or run.max_attempts < 1:
        raise ConfigError(f"[run] workers, batch_size and max_attempts must be at least 1, got {run.workers}, "
                          f"{run.batch_size} and {run.max_attempts}")
    output = _dataclass_from("output", OutputSettings, data.get("output", {}))
    if output.patient_id not in PATIENT_ID_MODES:
        raise ConfigError(f"[output].patient_id must be one of {', '.join(PATIENT_ID_MODES)}, got {output.patient_id!r}")
    if not (len(output.file_mode) == 4 and output.file_mode[0] == "0"
            and all(c in "01234567" for c in output.file_mode) and int(output.file_mode, 8) & 0o600 == 0o600
            and not int(output.file_mode, 8) & 0o007):
        raise ConfigError(f"[output].file_mode must be octal like \"0600\" or \"0640\": readable and writable by "
                          f"the owner, nothing for others; got {output.file_mode!r}")
    if output.id_key_file is not None and not Path(output.id_key_file).is_absolute():
        output = replace(output, id_key_file=str(base / output.id_key_file))
    try:
        selection = SelectionRules.from_mapping(data.get("selection", {}))
    except SelectionConfigError as exc:
        raise ConfigError(f"[selection]: {exc}") from None
    return SiteConfig(members, op_path, run, selection, output, source, _scope(data.get("scope", {})))


def _scope(data: Any) -> ScopeSettings:
    if not isinstance(data, Mapping):
        raise ConfigError("[scope] must be a table")
    plain = {k: v for k, v in data.items() if k != "body_parts"}
    settings = _dataclass_from("scope", ScopeSettings, plain)
    if "body_parts" in data:
        parts = data["body_parts"]
        if isinstance(parts, str) or not isinstance(parts, list) or not all(isinstance(p, str) and p.strip()
                                                                            for p in parts):
            raise ConfigError(f"[scope].body_parts must be a list of BodyPartExamined values, got {parts!r}")
        settings = ScopeSettings(tuple(p.strip().upper() for p in parts), settings.require_body_part,
                                 settings.min_patient_age)
    if settings.min_patient_age < 0:
        raise ConfigError(f"[scope].min_patient_age must be >= 0 years, got {settings.min_patient_age}")
    return settings


def load_site_config(path: str | Path | None = None) -> SiteConfig:
    """Read and validate a site config; ``None`` loads the embedded default."""
    config_path = Path(path) if path is not None else DEFAULT_CONFIG
    if not config_path.is_file():
        hint = "" if path is not None else " (the embedded default ships in sample_data/ of a source checkout)"
        raise ConfigError(f"site config {str(config_path)!r} not found{hint}; pass --config FILE")
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"site config {str(config_path)!r} is not valid TOML: {exc}") from None
    return parse_site_config(data, config_path.parent, config_path)
