"""``monitor.json`` and ``monitor.html``: the monitor's findings, with plots (matplotlib):
each score's distribution in the window against the tuning set's, and the flag rate per night
with the band a night of its size shows at the tuning set's rate. The page is one static file
(plots embedded as PNG data), every text escaped, a Content-Security-Policy that loads nothing;
it names no patient."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

from dicom_io.atomic import atomic_write_text
from ensembles.operating_point.reference import Reference
from screen.monitor.checks import MonitorReport

__all__ = ["write_monitor_files"]


def _png(fig: object) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _score_plot(report: MonitorReport, reference: Reference) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in reference.scores if report.recent.get(n)]
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), dpi=90, squeeze=False)
    bins = [i / 20 for i in range(21)]
    for ax, name in zip(axes[0], names):
        ax.hist(reference.scores[name], bins=bins, density=True, alpha=0.5, label=f"tuning ({reference.n_studies})")
        ax.hist(report.recent[name], bins=bins, density=True, alpha=0.5, label=f"recent ({len(report.recent[name])})")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("raw study score", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _flag_plot(report: MonitorReport) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nights = [n for n in report.nights if n.screened]
    if not nights:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 2.8), dpi=90)
    x = list(range(len(nights)))
    ax.fill_between(x, [n.band[0] for n in nights], [n.band[1] for n in nights], alpha=0.25,
                    step="mid", label="95 % band at the tuning rate")
    ax.axhline(report.reference_rate, color="0.4", linestyle="--", linewidth=1, label="tuning flag rate")
    ax.plot(x, [n.flag_rate for n in nights], marker="o", label="flag rate per night")
    ax.set_xticks(x, [n.started_at[:10] for n in nights], rotation=45, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("flagged / screened")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return html.escape(str(value))


def render_html(report: MonitorReport, reference: Reference) -> str:
    """The page (see the module docstring)."""
    verdict = "ALARM" if report.alarm else "within bounds"
    rows = "".join(
        f"<tr class='{_cell(c.status)}'><td>{_cell(c.name)}</td><td>{_cell(c.status)}</td>"
        f"<td>{_cell(c.p_value if c.p_value is not None else '')}</td>"
        f"<td>{_cell(c.adjusted_p if c.adjusted_p is not None else '')}</td><td>{_cell(c.detail)}</td></tr>"
        for c in report.checks)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">",
        "<title>fracture-screen monitor</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}tr.alarm{background:#fdd}"
        "tr.insufficient{background:#ffd}</style></head><body>",
        f"<h1>Monitoring: {html.escape(verdict)}</h1>",
        f"<p>{report.screened} screened studies in {len(report.nights)} runs (checks need "
        f"{report.min_studies}); tuning reference: {report.reference_studies} studies.</p>",
        "<ul>" + "".join(f"<li>{html.escape(a)}</li>" for a in report.alarms) + "</ul>" if report.alarms else "",
        "<table><tr><th>check</th><th>status</th><th>p</th><th>Holm-adjusted p</th><th>detail</th></tr>",
        rows, "</table>",
    ]
    for title, image in (("Score distributions: tuning set against the window", _score_plot(report, reference)),
                         ("Flag rate per night", _flag_plot(report))):
        if image is not None:
            parts += [f"<h2>{html.escape(title)}</h2>", f'<img alt="{html.escape(title)}" src="{image}">']
    if report.reads is not None:
        parts.append("<h2>Realised performance (radiologists' reads)</h2><table><tr><th>week</th>"
                     "<th>sensitivity [95 % CI]</th><th>specificity [95 % CI]</th></tr>")
        for week in [*report.reads.weeks, report.reads.pooled]:
            cells = []
            for name in ("sensitivity", "specificity"):
                f = week.figure(name)
                cells.append(f"{f['hits']}/{f['n']} {_cell(f['value'])} [{_cell(f['ci_low'])}, {_cell(f['ci_high'])}]")
            parts.append(f"<tr><td>{_cell(week.period)}</td><td>{_cell(cells[0])}</td><td>{_cell(cells[1])}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_monitor_files(report: MonitorReport, reference: Reference, out_dir: Path,
                        json_path: Path | None = None) -> list[Path]:
    """Write ``monitor.json`` (or ``json_path``) and ``monitor.html`` into ``out_dir``
    atomically (the caller sets the folder's file mode)."""
    data = report.to_dict()
    target = json_path or out_dir / "monitor.json"
    atomic_write_text(target, json.dumps(data, indent=2, sort_keys=True, default=_plain) + "\n")
    page = out_dir / "monitor.html"
    atomic_write_text(page, render_html(report, reference))
    return [target, page]


def _plain(value: object) -> object:
    if isinstance(value, tuple):
        return list(value)
    return str(value)
