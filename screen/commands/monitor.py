"""``screen monitor OUT``: recent nights against the tuning set's reference (thin over
:mod:`screen.monitor`).

Exit codes: 0 every check within bounds, 3 an alarm was raised, 2 a usage error (no ledger, no
reference, a bad reads file), as every ``Error: ...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # pragma: no cover - typing only
    from screen.monitor.checks import MonitorReport

__all__ = ["ALARM_EXIT", "MonitorOutcome", "monitor_cmd", "run_monitor"]

#: Exit code of ``screen monitor`` when an alarm is raised.
ALARM_EXIT = 3


@dataclass(frozen=True)
class MonitorOutcome:
    """What :func:`run_monitor` found and wrote."""

    report: "MonitorReport"
    files: list[Path]

    @property
    def exit_code(self) -> int:
        return ALARM_EXIT if self.report.alarm else 0


def run_monitor(out_dir: Path, *, reference: Path | None = None, config_path: Path | None = None,
                nights: int | None = None, json_path: Path | None = None,
                reads: Path | None = None) -> MonitorOutcome:
    """Monitor ``out_dir``'s recent runs; callable without Click.

    Raises:
        ConfigError: no ledger in ``out_dir``, no operating point, one without a reference, or a
            bad reads file.
    """
    from dicom_io.atomic import file_mode
    from ensembles.operating_point.op_json import load_deciding_point
    from screen.errors import ConfigError
    from screen.monitor.checks import monitor_ledger
    from screen.monitor.html import write_monitor_files
    from screen.monitor.reads import match_reads, read_reads
    from screen.nightly.ledger import Ledger
    from screen.nightly.ledger_schema import LEDGER_NAME
    from screen.site_config import load_site_config

    site = load_site_config(config_path)
    point_file = reference or site.operating_point
    if point_file is None:
        raise ConfigError("screen monitor needs the tuning reference: pass --reference op.json or set "
                          "operating_point in the site config")
    if not (out_dir / LEDGER_NAME).is_file():
        raise ConfigError(f"{out_dir} has no {LEDGER_NAME}; give the --out folder of screen run")
    point = load_deciding_point(point_file)
    if point.reference is None:
        raise ConfigError(f"operating point {str(point_file)!r} has no monitoring reference (written by an older "
                          "screen tune); retune with `screen tune` to store one")
    ledger = Ledger(out_dir, read_only=True)
    try:
        matched = match_reads(ledger, read_reads(reads), point) if reads is not None else None
        report = monitor_ledger(ledger, point, site.monitor, nights=nights, reads=matched)
    finally:
        ledger.close()
    if report is None:  # pragma: no cover - the point has a reference
        raise ConfigError(f"operating point {str(point_file)!r} has no monitoring reference")
    with file_mode(site.output.mode_bits):
        files = write_monitor_files(report, point.reference, out_dir, json_path)
    return MonitorOutcome(report, files)


@click.command("monitor")
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--nights", type=click.IntRange(min=1), default=None,
              help="Runs to look at (default [monitor] nights; more are pooled up to [monitor] min_studies).")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="op.json holding the tuning reference (default: the site config's operating point).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Site config ([monitor] thresholds, file mode; default: the embedded one).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the findings here instead of OUT/monitor.json.")
@click.option("--reads", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Radiologists' final reads (CSV: study_instance_uid or accession_number, fracture "
                   "yes/no, read_date): realised sensitivity and specificity per week.")
def monitor_cmd(out_dir: Path, nights: int | None, reference: Path | None, config_path: Path | None,
                json_path: Path | None, reads: Path | None) -> None:
    """Compare OUT's recent nights with the tuning set: score drift (PSI, KS) per member and fused,
    flag rate, failures, unseen devices and body parts. Writes monitor.json and monitor.html.

    Exit 0 when all is within bounds, 3 when an alarm is raised, 2 on usage errors.
    """
    import sys

    outcome = run_monitor(out_dir, reference=reference, config_path=config_path, nights=nights,
                          json_path=json_path, reads=reads)
    report = outcome.report
    for check in report.checks:
        click.echo(f"{check.status:>12}  {check.name}: {check.detail}")
    click.echo(("ALARM: " + "; ".join(report.alarms)) if outcome.exit_code else
               "within bounds")
    click.echo(f"wrote {', '.join(str(p) for p in outcome.files)}")
    if outcome.exit_code:
        sys.exit(outcome.exit_code)
