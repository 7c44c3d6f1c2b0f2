"""The site config: one TOML file that says what ``screen run`` runs, where, and what it writes.

Example (``sample_data/site.toml`` is the embedded default)::

    # screen run /pacs/export --config site.toml --out /srv/screen
    schema_version = 1                   # optional (absent: 1); a newer one is refused
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
    patient_id = "hash"                  # "include" | "hash" (keyed pseudonym) | "omit"
    write_sr = true
    write_gsps = true                    # boxes any PACS viewer shows; write_sc = true adds images
    on_rescreen = "reject"               # "reject" (IOCM rejection note) | "keep"

    [scope]                              # the studies the members are fit for (intended use)
    body_parts = ["SHOULDER", "ARM"]     # others are "out-of-scope", never "negative"
    require_body_part = true
    min_patient_age = 18                 # years; 0 = no minimum

Each table is a :class:`~ensembles.config_model.ConfigModel` read by
:func:`~ensembles.config_model.parse_model`: an unknown key, a value of the wrong type or out of
range (a NaN timeout, a SeriesNumber DICOM cannot hold, an InstitutionName longer than 64
characters) is refused when the file is read, with a :class:`ConfigError` naming the key, the
value and the fix, never later in the night.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Self, get_args

from pydantic import ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from dicom_io.select import SELECTION_WORDING, SelectionRules, code_strings
from ensembles.config_model import ConfigModel, Problem, Wording, check, parse_model, show
from ensembles.types import MemberKind
from screen.errors import ConfigError

__all__ = ["DEFAULT_CONFIG", "DEFAULT_SCOPE_BODY_PARTS", "PROJECT_ROOT", "SITE_SCHEMA_VERSION", "MemberConfig",
           "AlertSettings", "OutputSettings", "SendSettings", "PatientIdPolicy", "RescreenPolicy", "RunSettings", "ScopeSettings", "SiteConfig",
           "load_site_config", "parse_site_config"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: The embedded default: demo members and operating point committed in ``sample_data/``.
DEFAULT_CONFIG = PROJECT_ROOT / "sample_data" / "site.toml"
#: The newest ``schema_version`` this code reads (a file without one is version 1).
SITE_SCHEMA_VERSION = 1


class RescreenPolicy(StrEnum):
    """``[output] on_rescreen``: what happens to a study's results already in a PACS when the
    study is screened again (it changed, or ``--force``/``--rescreen-since``)."""

    REJECT = "reject"
    KEEP = "keep"


class PatientIdPolicy(StrEnum):
    """``[output] patient_id``: what ``studies.csv`` holds for PatientID."""

    INCLUDE = "include"
    HASH = "hash"
    OMIT = "omit"


Dtype = Literal["float32", "bfloat16", "float16"]
Quantization = Literal["8bit", "4bit"]
PATIENT_ID_MODES: tuple[str, ...] = tuple(PatientIdPolicy)
DTYPES: tuple[str, ...] = get_args(Dtype)
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)

#: The largest DICOM IS value (SeriesNumber): a signed 32-bit integer.
MAX_IS = 2**31 - 1
#: A sane oldest ``[scope] min_patient_age``, in years.
MAX_PATIENT_AGE = 130
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


PositiveInt = Annotated[int, check(lambda v: v >= 1, "a positive integer")]
SYMMETRY_COUNTS = (1, 2, 4, 8)  # ensembles.symmetry.COUNTS (not imported: the config loads without torch)

#: ``[run] priority`` words (:func:`screen.nightly.plan.order_plans`).
PRIORITIES: tuple[str, ...] = ("newest", "oldest", "tag:RequestedProcedurePriority")


def is_clock_time(value: str) -> bool:
    """``HH:MM``, 24-hour (``[run] deadline``, ``--deadline``)."""
    return bool(re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", value))


def _is_long_string(value: str) -> bool:
    """A DICOM LO value (InstitutionName): 1 to 64 characters, no backslash, no control character."""
    return bool(value.strip()) and len(value) <= 64 and "\\" not in value and not _CONTROL.search(value)


def _is_file_mode(value: str) -> bool:
    """Octal text like ``0600``: readable and writable by the owner, nothing for others."""
    return (len(value) == 4 and value[0] == "0" and all(c in "01234567" for c in value)
            and int(value, 8) & 0o600 == 0o600 and not int(value, 8) & 0o007)


def _resolved(value: Path | None, info: ValidationInfo) -> Path | None:
    """``value`` resolved against the config file's folder (the parse's ``base`` context)."""
    base = (info.context or {}).get("base")
    if value is None or value.is_absolute() or base is None:
        return value
    return Path(base) / value


class MemberConfig(ConfigModel):
    """One ``[members.NAME]`` table: an ensemble member to load.

    Attributes:
        name: the member's name in outputs, thresholds and the operating point (the table's
            name; not a key of the table).
        kind: registry kind (``screen models`` lists them): a :class:`MemberKind` for a built-in
            kind, else the plain string a plugin registered (checked when the members load).
        checkpoint: local checkpoint directory (``save_pretrained`` + ``member.json``), resolved
            against the config file's folder.
        batch_size: images per forward pass; ``None`` uses ``[run] batch_size``.
        device: torch device of this member (``"cuda:1"``...); ``None`` uses ``[run] device``.
            Members may sit on different cards (README: memory per member).
        dtype: ``None`` for the policy default (bf16 on CUDA, float32 on CPU).
        quantization: ``None``, ``"8bit"`` or ``"4bit"`` (bitsandbytes; PaliGemma members).
        options: further keyword options passed to the member's ``from_checkpoint``.
        refiner: a ``refiner`` checkpoint directory whose crop regressor corrects this
            detector's boxes before fusion (the second stage; ``None``: boxes as predicted).
        refiner_iterations: refinement passes per box.
        score_symmetries: 1, 2, 4 or 8: the image score is the mean of the member's scores on
            the image under this many of the square's symmetries, flips first
            (:mod:`ensembles.symmetry_scored`; test-time augmentation of the decision, this many
            score passes per image; boxes stay those of the original image). Tune the operating
            point on scores made with the same setting. 1 (default): the plain score.
    """

    kind: str
    checkpoint: Path = Field(strict=False)
    batch_size: PositiveInt | None = None
    device: str | None = None
    dtype: Dtype | None = None
    quantization: Quantization | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    refiner: Path | None = Field(default=None, strict=False)
    refiner_iterations: PositiveInt = 1
    score_symmetries: Annotated[int, check(lambda v: v in SYMMETRY_COUNTS, "1, 2, 4 or 8")] = 1
    _name: str = PrivateAttr("")

    @property
    def name(self) -> str:
        return self._name

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a member kind (screen models lists them)")
        return MemberKind(value) if value in tuple(MemberKind) else value

    @field_validator("checkpoint", "refiner")
    @classmethod
    def _path(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolved(value, info)


class RunSettings(ConfigModel):
    """``[run]``: how the batch runner uses the machine.

    Attributes:
        device: torch device for the members.
        workers: decode worker processes (always child processes, so a file that hangs or crashes a
            decoder times out or fails alone, even with 1).
        batch_size: default images per forward pass.
        writers: processes that finish studies (fusion, SR, GSPS, SC, thumbnails) off the
            process that feeds the members; 0: in that process.
        decode_timeout_s: seconds one image may take to decode before it is failed.
        max_attempts: nights a failed study is tried with the same content; after that it is
            not retried silently but listed as needing attention every night (exit 1).
        deadline: ``"HH:MM"`` local time after which no new study is started (those in flight
            finish; the rest are deferred to the next night); earlier than the start means
            tomorrow. ``None``: no deadline. ``--deadline`` overrides it.
        priority: the order studies are screened in (what a deadline leaves for tomorrow):
            ``newest`` (StudyDate and StudyTime, latest first), ``oldest``, or
            ``tag:RequestedProcedurePriority`` (STAT, HIGH, MEDIUM, ROUTINE, LOW; a study from
            one of ``emergency_departments`` counts as STAT; ties newest first).
        emergency_departments: InstitutionalDepartmentName values (case and padding ignored)
            whose studies rank as STAT under ``tag:RequestedProcedurePriority``.
    """

    device: str = "cpu"
    workers: PositiveInt = 2
    batch_size: PositiveInt = 8
    writers: Annotated[int, check(lambda v: 0 <= v <= 64, "a number of processes from 0 to 64")] = 1
    decode_timeout_s: Annotated[float, check(lambda v: v > 0, "a number of seconds > 0")] = 300.0
    max_attempts: PositiveInt = 3
    deadline: Annotated[str, check(is_clock_time, 'a local time "HH:MM" (24-hour, e.g. "06:30")')] | None = None
    priority: Annotated[str, check(lambda v: v in PRIORITIES, f"one of {', '.join(PRIORITIES)}")] = "newest"
    emergency_departments: tuple[str, ...] = ()

    @field_validator("emergency_departments", mode="before")
    @classmethod
    def _departments(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value


DEFAULT_SCOPE_BODY_PARTS: tuple[str, ...] = ("SHOULDER", "ARM")
"""What the demo members (and the method's shoulder radiographs) cover."""


class ScopeSettings(ConfigModel):
    """``[scope]``: the studies the members are fit for (their intended use). A study outside
    it is ``out-of-scope`` with the reason, never screened and never called negative.

    Attributes:
        body_parts: BodyPartExamined values (DICOM CS, upper-cased) the members were trained on;
            every screenable view must have one. Empty: any body part.
        require_body_part: a view without BodyPartExamined makes its study out of scope.
        min_patient_age: youngest patient age in years (PatientAge, else StudyDate minus
            PatientBirthDate); 0: no minimum. With a minimum, an unknown age is out of scope.
    """

    body_parts: tuple[str, ...] = DEFAULT_SCOPE_BODY_PARTS
    require_body_part: bool = True
    min_patient_age: Annotated[float, check(lambda v: 0 <= v <= MAX_PATIENT_AGE,
                                            f"a number of years from 0 to {MAX_PATIENT_AGE}")] = 0.0

    @field_validator("body_parts", mode="before")
    @classmethod
    def _body_parts(cls, value: Any) -> tuple[str, ...]:
        try:
            return code_strings(value)
        except ValueError:
            raise ValueError("a list of BodyPartExamined values (DICOM code strings: 1 to 16 of "
                             "A-Z, 0-9, space and _ each)") from None


SeriesNumber = Annotated[int, check(lambda v: 1 <= v <= MAX_IS, f"a DICOM IS SeriesNumber from 1 to {MAX_IS}")]


class OutputSettings(ConfigModel):
    """``[output]``: what the outputs may contain.

    Attributes:
        patient_id: PatientID in ``studies.csv``: ``include``, ``hash`` (a keyed 128-bit
            pseudonym, :mod:`screen.id_key`) or ``omit``. Patient names are never written to
            CSV or logs. With ``hash`` or ``omit``, ``scan.csv`` holds no source paths either
            (archives are often laid out by PatientID): a keyed pseudonym of each path instead.
        accession: include AccessionNumber in ``studies.csv``.
        write_sr: write a DICOM SR per screened study (``sr/``).
        write_gsps: write a Grayscale Softcopy Presentation State per screened study with a
            finding (``gsps/``): the boxes and their texts on the source images, any viewer.
        write_sc: write an annotated Secondary Capture per image with a finding (``sc/``):
            the pixels as the pipeline saw them, boxes burned in, for viewers without GSPS.
        write_gap_sr: write a short SR "not screened by AI: <reason>" in each study that failed
            or was out of scope (``gap-sr/``), so the PACS shows the gap.
        on_rescreen: ``reject`` (default): when a study is screened again, its earlier SR,
            GSPS, SC and not-screened SR that a PACS stored are withdrawn by an IHE IOCM
            rejection note (``kos/``, sent before the new results); ``keep``: nothing is
            withdrawn, the PACS keeps both (README, "Outputs in the PACS"). Either way earlier
            results never sent are not sent any more.
        sr_series_number: SeriesNumber of the SR series (one new series per run): a DICOM IS
            value from 1 to 2147483647; likewise ``gsps_series_number``, ``sc_series_number``,
            ``kos_series_number`` and ``gap_sr_series_number`` for the other objects' series.
        institution_name: optional InstitutionName for the SR's equipment module (a DICOM LO
            value: at most 64 characters, no backslash, no control characters).
        id_key_file: the file holding the site's identifier key (mode 0600, outside every output
            folder), resolved against the config file's folder; unset: ``$FRACTURE_SCREEN_SALT``,
            else ``~/.config/fracture-screen/id-key``.
        file_mode: permissions of the files the run writes (octal text, ``"0600"`` or
            ``"0640"``...): they hold identifiers and SRs with patient names.
    """

    patient_id: PatientIdPolicy = Field(default=PatientIdPolicy.HASH, strict=False)
    accession: bool = True
    write_sr: bool = True
    write_gsps: bool = True
    write_sc: bool = False
    write_gap_sr: bool = False
    on_rescreen: RescreenPolicy = Field(default=RescreenPolicy.REJECT, strict=False)
    sr_series_number: SeriesNumber = 9901
    gsps_series_number: SeriesNumber = 9902
    sc_series_number: SeriesNumber = 9903
    kos_series_number: SeriesNumber = 9904
    gap_sr_series_number: SeriesNumber = 9905
    institution_name: Annotated[str, check(_is_long_string, "a DICOM LO value: 1 to 64 characters, no "
                                                            "backslash and no control characters")] | None = None
    id_key_file: Path | None = Field(default=None, strict=False)
    file_mode: Annotated[str, check(_is_file_mode, 'octal like "0600" or "0640": readable and writable by the '
                                                   "owner, nothing for others")] = "0600"

    @property
    def mode_bits(self) -> int:
        return int(self.file_mode, 8)

    @field_validator("id_key_file")
    @classmethod
    def _key_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolved(value, info)


class AlertSettings(ConfigModel):
    """``[alerts]``: how a night tells monitoring systems and people how it went.

    Attributes:
        status_file: a Prometheus textfile (node_exporter's textfile collector) written after
            every run: counts, durations, failures, deferred studies, the alarm, the last
            successful night; resolved against the config file's folder; ``None``:
            ``OUT/screen.prom``.
        command: a program run after a night that failed (exit 1 or 2) or raised an alarm, with
            the run's summary as JSON on its standard input and the summary file's path as its
            last argument; a string is split like a shell would (never run by a shell), a list
            is the argument vector. Its failure is logged and never fails the night.
        command_timeout_s: seconds the command may run before it is killed.
    """

    status_file: Path | None = Field(default=None, strict=False)
    command: tuple[str, ...] = ()
    command_timeout_s: Annotated[float, check(lambda v: 0 < v <= 3600, "a number of seconds from 0 to 3600")] = 60.0

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return tuple(shlex.split(value))
            except ValueError:
                raise ValueError("a command line with balanced quotes, or a list of arguments") from None
        return tuple(value) if isinstance(value, list) else value

    @field_validator("status_file")
    @classmethod
    def _status_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolved(value, info)


def _is_ae_title(value: str) -> bool:
    """A DICOM AE value: 1 to 16 printable ASCII characters besides padding, no backslash."""
    return bool(re.fullmatch(r"[\x20-\x5b\x5d-\x7e]{1,16}", value.strip(" "))) and bool(value.strip())


class SendSettings(ConfigModel):
    """``[send]``: how ``--send-to`` talks to the PACS.

    Attributes:
        tls: DICOM TLS (PS3.15 B.1) on the association; the peer's certificate is verified
            against ``ca_file`` (or the system's CAs) and the host name unless ``verify`` is off.
        ca_file: PEM file of the CA(s) that sign the PACS's certificate.
        cert_file: PEM client certificate, for a PACS that asks for one (mutual TLS).
        key_file: PEM private key of ``cert_file`` (unencrypted; readable by the service user only).
        verify: check the peer's certificate and host name (turn off only for a test PACS).
        calling_ae: our AE title (the PACS must know it).
    """

    tls: bool = False
    ca_file: Path | None = Field(default=None, strict=False)
    cert_file: Path | None = Field(default=None, strict=False)
    key_file: Path | None = Field(default=None, strict=False)
    verify: bool = True
    calling_ae: Annotated[str, check(_is_ae_title, "an AE title: 1 to 16 ASCII characters, no backslash")] = (
        "FRACTURE_SCREEN")

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        path = _resolved(value, info)
        if path is not None and not path.is_file():
            raise ValueError(f"an existing PEM file (no file at {str(path)!r})")
        return path

    @model_validator(mode="after")
    def _pair(self) -> SendSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("[send] cert_file and key_file go together: give both (the client certificate "
                             "and its key) or neither")
        if not self.tls and {"ca_file", "cert_file", "key_file"} & self.model_fields_set:
            raise ValueError("[send] ca_file, cert_file and key_file are used only with tls = true; add it")
        return self


_MEMBERS_NEEDED = "the site config needs at least one [members.NAME] table with kind and checkpoint"
_NAME_FORBIDDEN = re.compile(r"[,=\x00-\x1f\x7f-\x9f]")


class MonitorSettings(ConfigModel):
    """``[monitor]``: when ``screen monitor`` (and the end of ``screen run``) raises an alarm.

    Recent nights are pooled until ``min_studies`` screened studies (PSI on a 24-study night
    exceeds 0.25 about 80 % of the time with no drift at all). Each score (every member and the
    fused one) gets a two-sample Kolmogorov-Smirnov test against the tuning set, and the flag
    rate Fisher's exact test against the tuning set's; the p-values are Holm-corrected
    together (family-wise ``alpha``), and a check alarms only when it is significant *and* its
    effect is material (PSI >= ``psi_threshold``; the flag rate moved by >= ``min_flag_rate_change``).
    README "Monitoring" gives the false-alarm rate of these defaults, measured by simulation.

    Attributes:
        nights: runs looked at (the newest first; more are pooled while under ``min_studies``).
        min_studies: screened studies the statistical checks need; fewer: reported, no alarm.
        alpha: family-wise false-alarm level of the statistical checks (Holm over all of them).
        psi_threshold: population stability index a drifting score must also reach.
        min_flag_rate_change: absolute change of the flag rate that also must be reached.
        max_failure_rate: share of a window's studies that may fail before an alarm.
        alarm_on_unseen: alarm when a screened study's device (Manufacturer and model) or body
            part never occurred in the tuning set.
    """

    nights: PositiveInt = 7
    min_studies: PositiveInt = 200
    alpha: Annotated[float, check(lambda v: 0 < v < 1, "a probability in (0, 1), e.g. 0.01")] = 0.01
    psi_threshold: Annotated[float, check(lambda v: v >= 0, "a number >= 0, e.g. 0.2")] = 0.2
    min_flag_rate_change: Annotated[float, check(lambda v: 0 <= v <= 1, "a share in [0, 1], e.g. 0.1")] = 0.1
    max_failure_rate: Annotated[float, check(lambda v: 0 <= v <= 1, "a share in [0, 1], e.g. 0.05")] = 0.05
    alarm_on_unseen: bool = True


class RayResources(ConfigModel):
    """``[ray]``: how ``screen run --engine ray`` places the night on a Ray cluster (README
    "Many machines: the Ray engine"). The local engine ignores it.

    Attributes:
        address: the cluster to join (``"auto"``: the one ``ray start`` made on this machine;
            ``"HOST:PORT"``: a head node); ``""`` starts a local Ray instance for the run.
            ``--address`` overrides it.
        local_cpus: CPUs a local instance may use; 0: all of this machine's.
        actors_per_member: actors (model copies) of each member; each holds its model once.
        member_gpus: GPUs each member actor asks for: 1 gives each member a card of its own, 0.5
            lets two members share one (the memory plan of README "Memory" must allow it);
            0 on a CPU cluster.
        member_cpus: CPUs each member actor asks for (fractions share cores; the members' own
            torch threads follow its whole part, at least 1).
        decode_cpus: CPUs each index or decode task asks for.
        decode_memory_mb: memory Ray reserves for each decode task (its studies' decoded images:
            a 3,000 x 2,500 radiograph is 30 MB as float32). Its own request also keeps Ray Data
            from fusing decoding into the first member's actor, where it would stall that
            member's GPU image by image.
        studies_per_task: studies one decode task takes (its images decode one by one, each in
            a child process with ``[run] decode_timeout_s``).
        files_per_task: files one index task reads.
    """

    address: str = ""
    local_cpus: Annotated[int, check(lambda v: v >= 0, "a number of CPUs >= 0 (0: all)")] = 0
    actors_per_member: PositiveInt = 1
    member_gpus: Annotated[float, check(lambda v: v >= 0, "a number of GPUs >= 0, e.g. 1 or 0.5")] = 0.0
    member_cpus: Annotated[float, check(lambda v: v > 0, "a number of CPUs > 0, e.g. 1 or 0.25")] = 0.5
    decode_cpus: Annotated[float, check(lambda v: v > 0, "a number of CPUs > 0, e.g. 1 or 0.5")] = 0.5
    decode_memory_mb: PositiveInt = 1024
    studies_per_task: PositiveInt = 4
    files_per_task: PositiveInt = 256


class SiteConfig(ConfigModel):
    """The whole site config, with paths resolved against the config file's folder.

    Attributes:
        schema_version: the file format's version (absent: 1); a newer one is refused.
        operating_point: the operating point JSON; ``None`` before tuning (``screen eval`` then
            uses each ``member.json`` threshold; ``screen run`` refuses to screen without one).
        run: ``[run]``.
        members: the ``[members.NAME]`` tables, in file order (each knows its ``name``).
        selection: ``[selection]``: :class:`dicom_io.select.SelectionRules`.
        output: ``[output]``.
        scope: ``[scope]``.
        alerts: ``[alerts]``.
        send: ``[send]``.
        monitor: ``[monitor]``.
        ray: ``[ray]``.
        source: the file it was read from (``None`` when parsed from a mapping without one).
    """

    # "members" only: the field's own name is no key of the file
    model_config = ConfigDict(validate_by_name=False, validate_by_alias=True)

    schema_version: PositiveInt = 1
    operating_point: Path | None = Field(default=None, strict=False)
    run: RunSettings = RunSettings()
    member_tables: dict[str, MemberConfig] = Field(alias="members")
    selection: SelectionRules = SelectionRules()
    output: OutputSettings = OutputSettings()
    scope: ScopeSettings = ScopeSettings()
    alerts: AlertSettings = AlertSettings()
    send: SendSettings = SendSettings()
    monitor: MonitorSettings = MonitorSettings()
    ray: RayResources = RayResources()
    _source: Path | None = PrivateAttr(None)

    @property
    def members(self) -> tuple[MemberConfig, ...]:
        return tuple(self.member_tables.values())

    @property
    def source(self) -> Path | None:
        return self._source

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (``members=`` the tables by name), validated like the file."""
        data: dict[str, Any] = {("members" if name == "member_tables" else name): getattr(self, name)
                                for name in type(self).model_fields}
        data.update(changes)
        return type(self).model_validate(data, context={"source": self.source})

    @model_validator(mode="before")
    @classmethod
    def _newer(cls, data: Any) -> Any:
        """A file for a newer fracture-screen is refused before its (maybe new) keys are."""
        version = data.get("schema_version") if isinstance(data, Mapping) else None
        if isinstance(version, int) and not isinstance(version, bool) and version > SITE_SCHEMA_VERSION:
            raise ValueError(
                f"the site config has schema_version {version}: it was written for a newer fracture-screen "
                f"(this one reads schema_version {SITE_SCHEMA_VERSION} and older); upgrade fracture-screen "
                "or write the file for this version")
        return data

    @field_validator("operating_point")
    @classmethod
    def _op(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolved(value, info)

    @field_validator("member_tables")
    @classmethod
    def _some_members(cls, value: dict[str, MemberConfig]) -> dict[str, MemberConfig]:
        if not value:
            raise ValueError(_MEMBERS_NEEDED)
        return value

    @model_validator(mode="after")
    def _members_exist(self, info: ValidationInfo) -> SiteConfig:
        """Name each member; its name, checkpoint and refiner are checked here, where its
        table's name is known."""
        for name, member in self.member_tables.items():
            where = f"[members.{name}]"
            if not name.strip() or _NAME_FORBIDDEN.search(name):
                raise ValueError(
                    f"[members.{name!r}]: a member name must be non-empty, without ',', '=' or control "
                    "characters (it is written into outputs and the SR's algorithm parameters); rename the table")
            if not member.checkpoint.is_dir():
                raise ValueError(
                    f"{where} checkpoint {str(member.checkpoint)!r} is not a directory; give the local folder "
                    "holding member.json and the safetensors weights (hub ids are never used at run time)")
            if member.refiner is not None and not (member.refiner / "member.json").is_file():
                raise ValueError(
                    f"{where}.refiner {str(member.refiner)!r} is not a refiner checkpoint (no member.json there)")
            if member.refiner is None and "refiner_iterations" in member.model_fields_set:
                raise ValueError(f'{where}.refiner_iterations needs a refiner = "<checkpoint dir>"')
            member._name = name
        source = (info.context or {}).get("source")
        self._source = Path(source) if source is not None else None
        return self


_TABLES = ("run", "members", "selection", "output", "scope", "alerts", "send", "monitor")


def _where(loc: tuple[str | int, ...]) -> str:
    """``("run", "workers")`` -> ``[run].workers``; ``("members", "detr")`` -> ``[members.detr]``."""
    if not loc:
        return "the site config"
    if len(loc) == 1 and loc[0] in _TABLES:
        return f"[{loc[0]}]"
    if len(loc) == 2 and loc[0] == "members":
        return f"[members.{loc[1]}]"
    head, last = loc[:-1], loc[-1]
    if isinstance(last, int):
        return f"{_where(head)}[{last}]"
    return f"{_where(head)}.{last}" if head else str(last)


def _selection(problem: Problem) -> str | None:
    """A ``[selection]`` problem worded as :class:`SelectionRules` words it (as before)."""
    if problem.loc[:1] != ("selection",) or len(problem.loc) == 1 and problem.kind == "invalid":
        return None
    return "[selection]: " + SELECTION_WORDING.message(dataclasses.replace(problem, loc=problem.loc[1:]))


def _unknown(problem: Problem) -> str:
    return _selection(problem) or (f"unknown key(s) {', '.join(problem.keys)} in {_where(problem.loc)}; "
                                   f"valid keys: {', '.join(problem.valid)}")


def _invalid(problem: Problem) -> str:
    if problem.expected.startswith(("[", "the site config")):  # a check that words its whole message
        return problem.expected
    return _selection(problem) or f"{_where(problem.loc)} must be {problem.expected}, got {show(problem.value)}"


def _missing(problem: Problem) -> str:
    key = problem.keys[0] if problem.keys else "?"
    if not problem.loc and key == "members":
        return _MEMBERS_NEEDED
    if problem.loc[:1] == ("members",):
        return f'{_where(problem.loc)} needs {key!r} (e.g. kind = "detr", checkpoint = "models/detr")'
    return f"{_where(problem.loc)} needs {key!r}"


SITE_WORDING = Wording(unknown=_unknown, invalid=_invalid, missing=_missing)
"""How site config problems read: ``unknown key(s) wokers in [run]; valid keys: ...``,
``[run].workers must be an integer, got '4'``."""


def parse_site_config(data: Mapping[str, Any], base: Path, source: Path | None = None) -> SiteConfig:
    """Validate a parsed TOML mapping; relative paths resolve against ``base``.

    Raises:
        ConfigError: an unknown key, a missing or bad value, a missing checkpoint folder, or a
            ``schema_version`` newer than this code reads; the message names the key.
    """
    return parse_model(SiteConfig, data, error=ConfigError, wording=SITE_WORDING,
                       context={"base": base, "source": source})


def load_site_config(path: str | Path | None = None) -> SiteConfig:
    """Read and validate a site config; ``None`` loads the embedded default.

    Raises:
        ConfigError: the file is missing, not TOML, or not a valid site config.
    """
    config_path = Path(path) if path is not None else DEFAULT_CONFIG
    if not config_path.is_file():
        hint = "" if path is not None else " (the embedded default ships in sample_data/ of a source checkout)"
        raise ConfigError(f"site config {str(config_path)!r} not found{hint}; pass --config FILE")
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"site config {str(config_path)!r} is not valid TOML: {exc}") from None
    return parse_site_config(data, config_path.parent, config_path)
