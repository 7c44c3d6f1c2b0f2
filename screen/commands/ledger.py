"""``screen ledger rebuild OUT``: a new ledger from the SRs and CSVs on disk (thin over
:func:`screen.nightly.ledger_rebuild.rebuild_ledger`)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("ledger")
def ledger_cmd() -> None:
    """The output folder's ledger (what was screened, with which models, what was sent)."""


@ledger_cmd.command("rebuild")
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def rebuild_cmd(out_dir: Path) -> None:
    """Rebuild OUT's lost or unusable ledger from its SRs, studies.csv and findings.csv.

    A working ledger is never replaced; an unusable one is kept beside the new one.
    """
    from screen.nightly.ledger_rebuild import rebuild_ledger, rebuild_lines

    for line in rebuild_lines(rebuild_ledger(out_dir), out_dir):
        click.echo(line)
