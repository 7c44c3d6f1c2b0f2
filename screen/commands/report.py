"""``screen report OUT``: rebuild the morning page from an output folder (thin over
:func:`screen.report.write_report`)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--archive", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The night's archive, to draw thumbnails that are missing when scan.csv holds no "
                   "paths ([output] patient_id hash or omit); found by a header-only scan.")
def report_cmd(out_dir: Path, archive: Path | None) -> None:
    """Rebuild OUT/report.html and its thumbnails from OUT's run.json and CSVs.

    Thumbnails already made are reused; an image whose source is not found gets a placeholder.
    The files get the permissions of OUT/studies.csv ([output] file_mode).
    """
    from screen.report import write_report

    sources: dict[str, Path] = {}
    if archive is not None:
        from dicom_io.scan import scan_archive

        sources = {inst.sop_instance_uid: inst.path for inst in scan_archive(archive).selected}
    click.echo(f"wrote {write_report(out_dir, sources=sources)}")
