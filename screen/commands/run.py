"""The ``screen run`` command: the nightly job, thin over :func:`screen.nightly.runner.run_screen`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from screen.nightly.progress import configure_logging, progress

if TYPE_CHECKING:
    from screen.nightly.runner import RunSummary

def summary_table(summary: "RunSummary") -> str:
    """The closing table: studies by status, positives, images, time, where the outputs are."""
    lines = [f"run {summary.run_id}", f"{'studies':<20} {'count':>7}", "-" * 28]
    for status in ("screened", "already-screened", "out-of-scope", "skipped", "failed", "deferred", "would-screen"):
        if summary.counts.get(status):
            lines.append(f"{status:<20} {summary.counts[status]:>7}")
    lines.append("-" * 28)
    if summary.counts.get("screened"):
        lines.append(f"{'positive':<20} {summary.positives:>7}")
        lines.append(f"{'images scored':<20} {summary.images:>7}")
    if summary.sent:
        lines.append(f"{'SRs sent':<20} {summary.sent.get('sent', 0):>7}")
        lines.append(f"{'SR sends failed':<20} {summary.sent.get('failed', 0):>7}")
    if "wall" in summary.timings:
        lines.append(f"{'wall time (s)':<20} {summary.timings['wall']:>7.1f}")
    if summary.deferred:
        lines.append(f"deadline {summary.deadline} reached: {len(summary.deferred)} studies left for the next night "
                     "(screened first then, in the priority order)")
    for halving in summary.batch_halvings:
        lines.append(f"out of device memory: member {halving['member']} batch {halving['from']} -> {halving['to']}")
    if summary.intended_use != "clinical":
        lines.append(f"results of {summary.intended_use} members: not clinical results")
    if summary.collisions:
        lines.append(f"UID collisions found tonight ({len(summary.collisions)}): "
                     + ", ".join(summary.collisions[:10]))
    if summary.needs_attention:
        lines.append(f"needs attention ({len(summary.needs_attention)} studies no longer retried; fix the "
                     "data, then run with --force):")
        lines += [f"  {uid}: {reason}" for uid, reason in summary.needs_attention[:50]]
    return "\n".join(lines)


@click.command("run")
@click.argument("archive", type=click.Path(exists=True, path_type=Path))
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Site config TOML (default: the demo members in sample_data/site.toml).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("screen-out"),
              show_default=True, help="Output folder: studies.csv, findings.csv, sr/, ledger.sqlite, run.json.")
@click.option("--workers", type=click.IntRange(min=1), help="Decode worker processes (config [run] workers).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Images per forward pass (config [run] batch_size).")
@click.option("--device", help="Torch device for the members, e.g. cpu, cuda, cuda:1.")
@click.option("--limit", type=click.IntRange(min=1), help="Screen at most this many studies this run.")
@click.option("--since", "since", metavar="DATE", help="Only studies with StudyDate on or after DATE (YYYY-MM-DD).")
@click.option("--dry-run", is_flag=True, help="Scan and select only: say what would be screened, write nothing.")
@click.option("--force", is_flag=True, help="Re-screen studies the ledger already has screened.")
@click.option("--operating-point", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Operating point JSON in place of the config's.")
@click.option("--send-to", metavar="AET@HOST:PORT", help="C-STORE the SRs to this PACS (retried; recorded in the ledger).")
@click.option("--rescreen-since", metavar="DATE",
              help="Re-screen studies of StudyDate DATE or later that were screened with other models "
                   "(a new SR supersedes each); without it a new model applies to new studies only.")
@click.option("--allow-demo", is_flag=True,
              help="Let --send-to send results of members declared intended_use \"demo\" (a test PACS).")
@click.option("--deadline", metavar="HH:MM",
              help="Local time after which no new study starts (those in flight finish; the rest are left "
                   "for the next night); earlier than now means tomorrow. Config [run] deadline.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this machine's worker processes; ray: Ray Data tasks and member actor pools "
                   "(pip install 'fracture-screen[ray]'; config [ray]).")
@click.option("--address", metavar="auto|HOST:PORT",
              help="With --engine ray: the Ray cluster to join (config [ray] address; none: a local Ray instance).")
def run_cmd(archive: Path, config_path: Path | None, out_dir: Path, workers: int | None, batch_size: int | None,
            device: str | None, limit: int | None, since: str | None, dry_run: bool, force: bool,
            operating_point: Path | None, send_to: str | None, rescreen_since: str | None,
            allow_demo: bool, deadline: str | None, engine: str, address: str | None) -> None:
    """Screen the DICOM studies under ARCHIVE: one row per study, one SR per screened study.

    Exit codes: 0 every study screened, or skipped or out of scope for a stated reason, or left
    for the next night by the deadline; 1 some studies failed (the rest are done and recorded) or
    need attention; 2 usage or configuration errors (an unusable ledger included: nothing is
    changed).
    """
    from screen.nightly.runner import RunOptions, parse_since, run_screen  # heavy: members, highdicom

    if address is not None and engine != "ray":
        raise click.UsageError("--address names a Ray cluster: use it with --engine ray")
    configure_logging()
    if config_path is None:
        click.echo("no --config: screening with the demo members of sample_data/site.toml "
                   "(phantom-trained; their results are not clinical results)", err=True)
    options = RunOptions(workers=workers, batch_size=batch_size, device=device, limit=limit,
                         since=parse_since(since) if since else None, dry_run=dry_run, force=force,
                         operating_point=operating_point, send_to=send_to,
                         rescreen_since=parse_since(rescreen_since, "--rescreen-since") if rescreen_since else None,
                         allow_demo=allow_demo, deadline=deadline, engine=engine, address=address)
    summary = run_screen(archive, out_dir, config_path=config_path, options=options, progress=progress)
    if dry_run:
        for uid in summary.would_screen:
            click.echo(f"would screen {uid}")
    click.echo(summary_table(summary))
    if not dry_run:
        click.echo(f"outputs in {out_dir}")
    if summary.exit_code:
        sys.exit(summary.exit_code)
