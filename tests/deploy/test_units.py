"""The systemd units in deploy/: they verify, run as the service user, and map the exit codes.

``systemd-analyze verify`` needs no running systemd; it checks every directive and that each
ExecStart program exists, so the units are verified as installed from a checkout at
``/opt/fracture-screen`` with that path pointed at this checkout (its venv and deploy/).
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
INSTALLED = "/opt/fracture-screen"
UNITS = ("fracture-screen.service", "fracture-screen.timer", "fracture-screen-monitor.service",
         "fracture-screen-monitor.timer", "fracture-screen-notify@.service")

needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="needs systemd-analyze (apt-get install -y systemd)")


def _installed_here(folder: Path, names: tuple[str, ...] = UNITS) -> list[Path]:
    """The units with /opt/fracture-screen pointed at this checkout, in ``folder``."""
    if not (ROOT / ".venv" / "bin" / "screen").exists():
        pytest.skip("needs the checkout's .venv (pip install -e .)")
    paths = []
    for name in names:
        path = folder / name
        path.write_text((DEPLOY / name).read_text(encoding="utf-8").replace(INSTALLED, str(ROOT)), encoding="utf-8")
        paths.append(path)
    return paths


def _verify(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", *map(str, paths)], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, SYSTEMD_LOG_COLOR="0"))


@needs_systemd
def test_every_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    done = _verify(_installed_here(tmp_path))
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "")


@needs_systemd
def test_the_verification_catches_mistakes(tmp_path: Path) -> None:
    """What the test above relies on: a missing program fails, an unknown key warns."""
    [service] = _installed_here(tmp_path, ("fracture-screen.service",))
    service.write_text(service.read_text().replace(f"{ROOT}/.venv/bin/screen", "/nonexistent/screen"))
    assert "/nonexistent/screen is not executable" in _verify([service]).stderr
    service.write_text(service.read_text().replace("Type=oneshot", "Type=oneshot\nUsr=root"))
    assert "Unknown key 'Usr'" in _verify([service]).stderr


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / name, encoding="utf-8")
    return parser


@pytest.mark.parametrize("name,command", [("fracture-screen.service", "screen run"),
                                          ("fracture-screen-monitor.service", "screen monitor")])
def test_services_run_as_the_service_user_and_notify_on_failure(name: str, command: str) -> None:
    unit = _unit(name)
    service = unit["Service"]
    assert service["User"] == "fracture-screen" and service["Group"] == "fracture-screen"
    assert f"{INSTALLED}/.venv/bin/{command}" in service["ExecStart"]
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert unit["Unit"]["OnFailure"] == "fracture-screen-notify@%n.service"
    # exit codes other than 0 are failures (run: 1 some studies failed, 2 not run; monitor: 3
    # alarm, 2 usage): none is declared a success, so each one reaches the notify unit
    assert "SuccessExitStatus" not in service


def test_timers_start_their_service_once_a_day() -> None:
    night, morning = _unit("fracture-screen.timer")["Timer"], _unit("fracture-screen-monitor.timer")["Timer"]
    assert night["OnCalendar"] == "*-*-* 22:00:00" and morning["OnCalendar"] == "*-*-* 07:00:00"
    assert night["Persistent"] == morning["Persistent"] == "true"


@pytest.mark.parametrize("unit,status,words", [
    ("fracture-screen.service", "1", "some studies failed or need attention"),
    ("fracture-screen.service", "2", "the night did not run"),
    ("fracture-screen-monitor.service", "3", "monitoring raised an alarm"),
    ("fracture-screen-monitor.service", "2", "monitoring did not run"),
    ("fracture-screen.service", "9", "exit status '9'"),
])
def test_the_notify_script_says_what_the_exit_code_means(tmp_path: Path, unit: str, status: str, words: str) -> None:
    told = tmp_path / "told"
    command = tmp_path / "page"
    command.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {told}\n')
    command.chmod(0o755)
    env = dict(os.environ, MONITOR_EXIT_STATUS=status, MONITOR_SERVICE_RESULT="exit-code",
               NOTIFY_COMMAND=str(command), PATH=f"{tmp_path}:/usr/bin:/bin")
    env.pop("NOTIFY_EMAIL", None)
    done = subprocess.run([str(DEPLOY / "notify-failure"), unit], capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0
    assert done.stdout.startswith(f"fracture-screen: {unit} failed on ") and words in done.stdout
    assert told.read_text() == done.stdout.strip()


def test_the_example_site_config_is_a_valid_site_config() -> None:
    """Every key of deploy/site.toml.example is read (its checkpoints and TLS files are the site's:
    the demo members and this file stand in for them)."""
    import tomllib

    from screen.site_config import parse_site_config

    data = tomllib.loads((DEPLOY / "site.toml.example").read_text(encoding="utf-8"))
    demo = sorted(p for p in (ROOT / "sample_data" / "models").iterdir() if (p / "member.json").is_file())
    for member in data["members"].values():
        member["checkpoint"] = str(demo[0])
    for key in ("ca_file", "cert_file", "key_file"):
        data["send"][key] = __file__
    data["operating_point"] = str(ROOT / "sample_data" / "op.json")
    config = parse_site_config(data, DEPLOY)
    assert config.run.deadline == "06:30" and config.run.priority == "tag:RequestedProcedurePriority"
    assert [m.device for m in config.members] == ["cuda:0", "cuda:1", "cuda:0"]
    assert config.send.tls and config.alerts.command[0] == "/usr/local/bin/page-oncall"
