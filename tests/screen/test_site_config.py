"""The site config on the one typed-config mechanism: every key checked when the file is read."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dicom_io.select import SelectionConfigError, SelectionRules
from ensembles.types import MemberKind
from screen.cli import cli
from screen.errors import ConfigError
from screen.site_config import (DEFAULT_CONFIG, SITE_SCHEMA_VERSION, OutputSettings, PatientIdPolicy, ScopeSettings,
                                SiteConfig, load_site_config)

MEMBER = '[members.m]\nkind = "detr"\ncheckpoint = "models/m"\n'

VALID_KEYS = {
    "top": "schema_version, operating_point, run, members, selection, output, scope, alerts, send, monitor, ray",
    "run": "device, workers, batch_size, writers, decode_timeout_s, max_attempts, deadline, priority, emergency_departments",
    "members.m": ("kind, checkpoint, batch_size, device, dtype, quantization, options, refiner, refiner_iterations, "
                  "score_symmetries"),
    "selection": ("allow_burned_in, allow_derived, allow_for_processing, allow_secondary_capture, body_parts, "
                  "deduplicate, max_pixel_bytes, modalities"),
    "output": "patient_id, accession, write_sr, write_gsps, write_sc, write_gap_sr, on_rescreen, sr_series_number, "
              "gsps_series_number, sc_series_number, kos_series_number, gap_sr_series_number, institution_name, "
              "id_key_file, file_mode",
    "scope": "body_parts, require_body_part, min_patient_age",
}


def _write(tmp_path: Path, text: str) -> Path:
    """A site config ``text`` next to an (empty) checkpoint folder ``models/m``."""
    (tmp_path / "models" / "m").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _with(table: str, lines: str) -> str:
    """The minimal config with ``lines`` in ``table`` (``top`` for the top level)."""
    if table == "top":
        return f"{lines}\n{MEMBER}"
    if table == "members.m":
        return f"{MEMBER}{lines}\n"
    return f"{MEMBER}\n[{table}]\n{lines}\n"


def _refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_site_config(_write(tmp_path, text))
    return str(info.value)


def test_the_minimal_config_loads_with_every_default(tmp_path: Path) -> None:
    site = load_site_config(_write(tmp_path, MEMBER))
    assert site.schema_version == 1 and site.operating_point is None and site.source == tmp_path / "site.toml"
    (member,) = site.members
    assert (member.name, member.kind, member.checkpoint) == ("m", MemberKind.DETR, tmp_path / "models" / "m")
    assert isinstance(member.kind, MemberKind)
    assert site.run.workers == 2 and site.output == OutputSettings() and site.scope == ScopeSettings()
    assert site.selection == SelectionRules() and site.output.mode_bits == 0o600
    assert site.output.patient_id is PatientIdPolicy.HASH


def test_relative_paths_resolve_against_the_files_folder(tmp_path: Path) -> None:
    (tmp_path / "refiner").mkdir()
    (tmp_path / "refiner" / "member.json").write_text("{}", encoding="utf-8")
    text = (f'operating_point = "op.json"\n{MEMBER}refiner = "refiner"\nrefiner_iterations = 2\nbatch_size = 3\n'
            'dtype = "float16"\nquantization = "8bit"\noptions = { max_new_tokens = 5 }\n'
            '\n[members.plugin]\nkind = "my-plugin-kind"\ncheckpoint = "models/m"\n'
            '\n[output]\nid_key_file = "keys/id-key"\nfile_mode = "0640"\n')
    site = load_site_config(_write(tmp_path, text))
    assert site.operating_point == tmp_path / "op.json" and site.output.id_key_file == tmp_path / "keys" / "id-key"
    first, plugin = site.members
    assert (first.refiner, first.refiner_iterations, first.batch_size) == (tmp_path / "refiner", 2, 3)
    assert (first.dtype, first.quantization, first.options) == ("float16", "8bit", {"max_new_tokens": 5})
    assert (plugin.name, plugin.kind) == ("plugin", "my-plugin-kind")  # a plugin's kind is checked at load
    assert site.output.mode_bits == 0o640


@pytest.mark.parametrize("table, where", [
    ("top", "the site config"), ("run", "[run]"), ("members.m", "[members.m]"), ("output", "[output]"),
    ("scope", "[scope]"),
])
def test_an_unknown_key_is_named_with_the_valid_keys(tmp_path: Path, table: str, where: str) -> None:
    message = _refused(tmp_path, _with(table, "wokers = 2\nzeal = 1"))
    assert message == f"unknown key(s) wokers, zeal in {where}; valid keys: {VALID_KEYS[table]}"


def test_an_unknown_selection_key_reads_as_before(tmp_path: Path) -> None:
    message = _refused(tmp_path, _with("selection", 'modality = ["CR"]'))
    assert message == f"[selection]: unknown selection key(s) modality; valid keys: {VALID_KEYS['selection']}"


@pytest.mark.parametrize("table, line, message", [
    ("run", 'workers = "4"', "[run].workers must be an integer, got '4'"),
    ("run", "workers = true", "[run].workers must be an integer, got True"),
    ("run", "workers = 2.5", "[run].workers must be an integer, got 2.5"),
    ("run", "device = { name = 'cuda' }", "[run].device must be a string, got {'name': 'cuda'}"),
    ("run", 'decode_timeout_s = "60"', "[run].decode_timeout_s must be a number, got '60'"),
    ("members.m", 'batch_size = "8"', "[members.m].batch_size must be an integer, got '8'"),
    ("members.m", "options = 3", "[members.m].options must be a table, got 3"),
    ("output", "write_sr = 1", "[output].write_sr must be true or false, got 1"),
    ("output", "institution_name = { a = 1 }", "[output].institution_name must be a string, got {'a': 1}"),
    ("scope", "require_body_part = 'yes'", "[scope].require_body_part must be true or false, got 'yes'"),
    ("scope", 'body_parts = "ARM"', "[scope].body_parts must be a list of BodyPartExamined values"),
    ("selection", "allow_derived = 'yes'", "[selection]: selection.allow_derived must be true or false, got 'yes'"),
    ("selection", "modalities = [1]", "[selection]: selection.modalities must be a list of strings, got [1]"),
    ("top", "operating_point = 5", "operating_point must be a path string, got 5"),
    ("top", "schema_version = '1'", "schema_version must be an integer, got '1'"),
])
def test_a_value_of_the_wrong_type_is_named(tmp_path: Path, table: str, line: str, message: str) -> None:
    assert _refused(tmp_path, _with(table, line)).startswith(message)


def test_a_table_given_as_a_value_is_refused(tmp_path: Path) -> None:
    assert _refused(tmp_path, f"run = 4\n{MEMBER}") == "[run] must be a table, got 4"
    assert _refused(tmp_path, "[members]\nm = 4\n") == "[members.m] must be a table, got 4"
    assert _refused(tmp_path, f'kind = "detr"\n{MEMBER}') == ("unknown key(s) kind in the site config; valid keys: "
                                                               f"{VALID_KEYS['top']}")


@pytest.mark.parametrize("table, line, message", [  # the issue's three, refused when the file is read
    ("run", "decode_timeout_s = nan", "[run].decode_timeout_s must be a finite number, got nan"),
    ("output", "sr_series_number = -5", "[output].sr_series_number must be a DICOM IS SeriesNumber from 1 to "
                                        "2147483647, got -5"),
    ("output", f'institution_name = "{"x" * 100}"', "[output].institution_name must be a DICOM LO value: 1 to 64 "
                                                     "characters, no backslash and no control characters, got 'xxx"),
])
def test_the_issues_values_are_refused_at_load(tmp_path: Path, table: str, line: str, message: str) -> None:
    assert _refused(tmp_path, _with(table, line)).startswith(message)


@pytest.mark.parametrize("table, line, message", [
    ("run", "decode_timeout_s = inf", "[run].decode_timeout_s must be a finite number, got inf"),
    ("run", "decode_timeout_s = 0", "[run].decode_timeout_s must be a number of seconds > 0, got 0"),
    ("run", "workers = 0", "[run].workers must be a positive integer, got 0"),
    ("run", "batch_size = -1", "[run].batch_size must be a positive integer, got -1"),
    ("run", "max_attempts = 0", "[run].max_attempts must be a positive integer, got 0"),
    ("members.m", "batch_size = 0", "[members.m].batch_size must be a positive integer, got 0"),
    ("output", "sr_series_number = 2147483648", "[output].sr_series_number must be a DICOM IS SeriesNumber"),
    ("output", "sr_series_number = 0", "[output].sr_series_number must be a DICOM IS SeriesNumber"),
    ("output", 'institution_name = "A\\\\B"', "[output].institution_name must be a DICOM LO value"),
    ("output", 'institution_name = "A\\nB"', "[output].institution_name must be a DICOM LO value"),
    ("output", 'institution_name = "  "', "[output].institution_name must be a DICOM LO value"),
    ("output", 'file_mode = "0644"', '[output].file_mode must be octal like "0600" or "0640": readable and '
                                     "writable by the owner, nothing for others, got '0644'"),
    ("output", 'file_mode = "rw-------"', "[output].file_mode must be octal like"),
    ("output", 'file_mode = "0400"', "[output].file_mode must be octal like"),
    ("scope", "min_patient_age = -1", "[scope].min_patient_age must be a number of years from 0 to 130, got -1"),
    ("scope", "min_patient_age = 1000", "[scope].min_patient_age must be a number of years from 0 to 130"),
    ("scope", 'body_parts = ["SHOULDER", "A-VERY-LONG-BODY-PART"]', "[scope].body_parts must be a list of "
                                                                    "BodyPartExamined values (DICOM code strings"),
    ("scope", 'body_parts = ["ARM\\\\LEG"]', "[scope].body_parts must be a list of BodyPartExamined values"),
    ("scope", 'body_parts = [""]', "[scope].body_parts must be a list of BodyPartExamined values"),
    ("selection", "modalities = []", "[selection]: selection.modalities must be a non-empty list"),
    ("selection", 'body_parts = ["SHOULDER JOINT AND ARM"]', "[selection]: selection.body_parts must be a list "
                                                             "of DICOM code strings"),
    ("selection", "max_pixel_bytes = 0", "[selection]: selection.max_pixel_bytes must be a positive number"),
    ("top", "schema_version = 0", "schema_version must be a positive integer, got 0"),
])
def test_a_value_out_of_range_is_refused_at_load(tmp_path: Path, table: str, line: str, message: str) -> None:
    assert _refused(tmp_path, _with(table, line)).startswith(message)


def test_body_parts_are_upper_cased_code_strings(tmp_path: Path) -> None:
    text = _with("scope", 'body_parts = [" shoulder", "Upper_Arm"]\nmin_patient_age = 18')
    site = load_site_config(_write(tmp_path, text + '\n[selection]\nbody_parts = ["hand"]\nmodalities = ["*"]\n'))
    assert site.scope.body_parts == ("SHOULDER", "UPPER_ARM") and site.scope.min_patient_age == 18.0
    assert site.selection.body_parts == ("HAND",) and site.selection.modalities == ("*",)


@pytest.mark.parametrize("table, key, words", [
    ("output", "patient_id", ("include", "hash", "omit")),
    ("members.m", "dtype", ("float32", "bfloat16", "float16")),
    ("members.m", "quantization", ("8bit", "4bit")),
])
def test_every_word_field_takes_its_words_and_lists_them_otherwise(tmp_path: Path, table: str, key: str,
                                                                   words: tuple[str, ...]) -> None:
    for word in words:
        site = load_site_config(_write(tmp_path, _with(table, f'{key} = "{word}"')))
        value = getattr(site.output if table == "output" else site.members[0], key)
        assert value == word
    message = _refused(tmp_path, _with(table, f'{key} = "maybe"'))
    listed = ", ".join(words[:-1]) + f" or {words[-1]}"
    assert message == f"[{table}].{key} must be one of {listed}, got 'maybe'"


def test_patient_id_is_the_policy_enum(tmp_path: Path) -> None:
    site = load_site_config(_write(tmp_path, _with("output", 'patient_id = "omit"')))
    assert site.output.patient_id is PatientIdPolicy.OMIT and site.output.patient_id == "omit"


def test_members_are_checked_with_their_table_named(tmp_path: Path) -> None:
    assert _refused(tmp_path, "[run]\nworkers = 1\n") == ("the site config needs at least one [members.NAME] "
                                                          "table with kind and checkpoint")
    assert _refused(tmp_path, "[members]\n") == ("the site config needs at least one [members.NAME] table with "
                                                 "kind and checkpoint")
    assert _refused(tmp_path, '[members.m]\nkind = "detr"\n') == (
        "[members.m] needs 'checkpoint' (e.g. kind = \"detr\", checkpoint = \"models/detr\")")
    missing = _refused(tmp_path, '[members.m]\nkind = "detr"\ncheckpoint = "models/none"\n')
    assert missing.startswith(f"[members.m] checkpoint {str(tmp_path / 'models' / 'none')!r} is not a directory")
    assert _refused(tmp_path, _with("members.m", 'refiner = "models/m"')) == (
        f"[members.m].refiner {str(tmp_path / 'models' / 'm')!r} is not a refiner checkpoint (no member.json there)")
    assert _refused(tmp_path, _with("members.m", "refiner_iterations = 2")) == (
        '[members.m].refiner_iterations needs a refiner = "<checkpoint dir>"')
    for bad in ("3", "0", "16", "true", "8.0", '"8"'):
        assert _refused(tmp_path, _with("members.m", f"score_symmetries = {bad}")).startswith(
            "[members.m].score_symmetries"), bad
    assert load_site_config(_write(tmp_path, _with("members.m", "score_symmetries = 4"))).members[0].score_symmetries == 4
    assert _refused(tmp_path, '[members.m]\nkind = " "\ncheckpoint = "models/m"\n') == (
        "[members.m].kind must be a member kind (screen models lists them), got ' '")
    bad_name = _refused(tmp_path, '[members."a,b"]\nkind = "detr"\ncheckpoint = "models/m"\n')
    assert bad_name.startswith("[members.'a,b']: a member name must be non-empty, without ',', '='")


def test_an_old_file_without_schema_version_loads(tmp_path: Path) -> None:
    assert load_site_config(_write(tmp_path, MEMBER)).schema_version == 1
    assert load_site_config(_write(tmp_path, f"schema_version = {SITE_SCHEMA_VERSION}\n{MEMBER}")).schema_version == 1


def test_a_newer_schema_version_is_refused_before_its_keys(tmp_path: Path) -> None:
    message = _refused(tmp_path, f"schema_version = {SITE_SCHEMA_VERSION + 1}\nnew_key = 1\n{MEMBER}")
    assert message.startswith(f"the site config has schema_version {SITE_SCHEMA_VERSION + 1}: it was written for "
                              "a newer fracture-screen")


def test_the_sample_config_loads() -> None:
    site = load_site_config(DEFAULT_CONFIG)
    assert isinstance(site, SiteConfig) and site.schema_version == 1
    assert [m.name for m in site.members] == ["pg-cls", "pg-det", "detr"]
    assert all(isinstance(m.kind, MemberKind) for m in site.members)
    assert site.operating_point == DEFAULT_CONFIG.parent / "op.json"
    assert site.output.patient_id is PatientIdPolicy.HASH


def test_a_loaded_config_cannot_change(tmp_path: Path) -> None:
    site = load_site_config(_write(tmp_path, MEMBER))
    with pytest.raises(Exception, match="frozen"):
        site.run.workers = 9  # type: ignore[misc]


def test_selection_rules_built_in_code_raise_the_selection_error() -> None:
    with pytest.raises(SelectionConfigError, match=r"^selection.body_parts must be a list of DICOM code strings"):
        SelectionRules(body_parts=("A" * 17,))
    with pytest.raises(SelectionConfigError, match=r"^unknown selection key\(s\) modality; valid keys: "):
        SelectionRules(modality=("CR",))  # type: ignore[call-arg]
    assert SelectionRules(modalities=("dx",), body_parts=("shoulder",)).modalities == ("DX",)


@pytest.mark.parametrize("line, message", [
    ("workers = 1\nwokers = 2", "Error: unknown key(s) wokers in [run]; valid keys: device, workers, batch_size, "
                                "writers, decode_timeout_s, max_attempts, deadline, priority, emergency_departments\n"),
    ("decode_timeout_s = nan", "Error: [run].decode_timeout_s must be a finite number, got nan\n"),
])
def test_screen_run_with_a_bad_config_exits_2_with_one_line(tmp_path: Path, line: str, message: str) -> None:
    config = _write(tmp_path, _with("run", line))
    archive = tmp_path / "archive"
    archive.mkdir()
    result = CliRunner().invoke(cli, ["run", str(archive), "--config", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output == message
    assert not (tmp_path / "out").exists()


def test_replace_keeps_members_names_and_source_and_validates() -> None:
    from screen.site_config import DEFAULT_CONFIG, load_site_config

    config = load_site_config(DEFAULT_CONFIG)
    before = config.run.workers
    copy = config.replace(run=config.run.replace(workers=before + 1))
    assert copy.run.workers == before + 1 and config.run.workers == before
    assert [m.name for m in copy.members] == [m.name for m in config.members]
    assert copy.source == config.source and copy.output == config.output
    with pytest.raises(ValueError, match="members"):
        config.replace(members={})


def test_the_symmetry_counts_are_the_ensembles_counts() -> None:
    """The config checks score_symmetries without importing torch; the counts are the same."""
    from ensembles.symmetry import COUNTS
    from screen.site_config import SYMMETRY_COUNTS

    assert SYMMETRY_COUNTS == COUNTS
