"""The morning page as one self-contained static HTML file.

Rules the page keeps (tests hold them):

- every text value goes through :func:`html.escape` (quotes too), whatever table it came from;
- no URL leaves the folder: links and images are relative paths checked by
  :func:`screen.report.model.safe_link` or made here; no CDN, font or stylesheet is fetched;
- the content reads with scripts off; one tiny inline script only marks each image as loaded
  (``data-loaded``), which the browser test reads; a Content-Security-Policy allows that script
  and the inline style by their hashes and nothing else, so even markup that slipped through
  could run no script and fetch nothing;
- negatives read "no AI finding", never "normal".
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from typing import Iterable, Sequence

from dicom_io.annotate import DOUBT_COLOUR, STRICT_COLOUR, finding_text
from screen.report.model import NightPage, StudyEntry, level_rank
from screen.report.thumbs import Thumb

__all__ = ["BANNER", "render_page"]

BANNER = "AI screening result, not for primary diagnosis"

_SCRIPT = ("addEventListener('load',function(){document.querySelectorAll('img').forEach(function(i){"
           "i.setAttribute('data-loaded',i.complete&&i.naturalWidth>0?'yes':'no')});"
           "document.body.setAttribute('data-ready','yes')});")


def _rgb(colour: tuple[int, int, int]) -> str:
    return "rgb({},{},{})".format(*colour)


_STYLE = f"""
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#111;background:#fafafa}}
h1{{font-size:1.5em;margin:0 0 .3em}} h2{{font-size:1.2em;margin:1.5em 0 .5em}}
.banner{{background:#222;color:#fff;padding:.4em .8em;display:inline-block}}
.use{{background:#fff3cd;border:1px solid #c90;padding:.4em .8em;margin:.5em 0}}
table{{border-collapse:collapse;margin:.3em 0}} td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}
th{{background:#eee}} td.n{{text-align:right}}
article.study{{background:#fff;border:1px solid #bbb;border-left:8px solid {_rgb(STRICT_COLOUR)};
 margin:1em 0;padding:.6em 1em}}
article.study.lower{{border-left:8px dashed {_rgb(DOUBT_COLOUR)}}}
article h3{{margin:.1em 0 .4em;font-size:1.1em}}
.thumbs{{display:flex;flex-wrap:wrap;gap:.6em}} figure{{margin:0}}
figure img{{max-width:360px;height:auto;background:#000;display:block}}
figcaption{{font-size:.85em;color:#333}}
.placeholder{{width:200px;height:150px;background:#ddd;display:flex;align-items:center;
 justify-content:center;text-align:center;font-size:.85em;padding:.4em}}
.voted{{font-weight:bold}} .uid{{font-family:monospace;font-size:.85em;color:#555}}
.legend span{{display:inline-block;width:2.2em;height:0;vertical-align:middle;margin:0 .3em 0 1em}}
.solid{{border-top:3px solid {_rgb(STRICT_COLOUR)}}} .dashed{{border-top:3px dashed {_rgb(DOUBT_COLOUR)}}}
footer{{margin-top:2em;font-size:.85em;color:#555}}
"""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if len(value) == 8 and value.isdigit() else value


def _percent(score: float | None) -> str:
    return "" if score is None else f"{int(round(min(max(score, 0.0), 1.0) * 100))} %"


def _is_lower(entry: StudyEntry, levels: Sequence[str]) -> bool:
    return bool(levels) and entry.level in levels and entry.level != levels[-1]


def render_page(page: NightPage, thumbs: dict[str, list[Thumb]]) -> str:
    """The whole page; ``thumbs`` holds each flagged study's pictures (by study UID)."""
    flagged = page.flagged
    negatives = page.by_status("screened")
    failed = page.by_status("failed")
    unscreened = page.by_status("out-of-scope") + page.by_status("skipped")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src \'self\' file:; '
        f'style-src {_hash(_STYLE)}; script-src {_hash(_SCRIPT)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>AI fracture screening: run {_e(page.run_id)}</title>", f"<style>{_STYLE}</style></head><body>",
        f"<h1>AI fracture screening: the night of run {_e(page.run_id)}</h1>",
        f'<p class="banner">{_e(BANNER)}</p>',
    ]
    if page.intended_use and page.intended_use != "clinical":
        parts.append(f'<p class="use">Results of {_e(page.intended_use)} members: not clinical results.</p>')
    parts += _summary(page, flagged, negatives, failed)
    parts.append(f'<section id="flagged"><h2>Flagged studies ({len(flagged)})</h2>')
    if page.levels:
        parts.append('<p class="legend">Boxes:' + "".join(
            f'<span class="{"solid" if i == len(page.levels) - 1 else "dashed"}"></span>{_e(level)}'
            for i, level in reversed(list(enumerate(page.levels)))) + "</p>")
    if not flagged:
        parts.append("<p>No study was flagged tonight.</p>")
    for entry in flagged:
        parts += _flagged(page, entry, thumbs.get(entry.study_instance_uid, []))
    parts.append("</section>")
    parts += _table("negative", f"No AI finding ({len(negatives)})", page, negatives, score=True)
    parts += _table("failed", f"Failed ({len(failed)})", page, failed, reason=True)
    parts += _table("not-screened", f"Out of scope or skipped ({len(unscreened)})", page, unscreened,
                    reason=True, status=True)
    if page.needs_attention:
        parts.append('<section id="attention"><h2>Needs attention (no longer retried)</h2><table>'
                     "<tr><th>Study</th><th>Reason</th></tr>")
        parts += [f'<tr><td class="uid">{_e(uid)}</td><td>{_e(reason)}</td></tr>'
                  for uid, reason in page.needs_attention]
        parts.append("</table></section>")
    parts.append(f"<footer>Run {_e(page.run_id)}, finished {_e(page.finished_at or 'unknown')}. "
                 "No AI finding means the screening flagged nothing; it is no reading of the study. "
                 "Thumbnails show each image as the screening saw it (its window), scaled down.</footer>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


def _summary(page: NightPage, flagged: Sequence[StudyEntry], negatives: Sequence[StudyEntry],
             failed: Sequence[StudyEntry]) -> list[str]:
    counts = page.counts
    rows = [("Screened tonight", counts.get("screened", 0)), ("Flagged", len(flagged))]
    for level in reversed(page.levels):
        rows.append((f"Flagged: {level}", sum(1 for e in flagged if e.level == level)))
    rows += [("No AI finding", len(negatives)), ("Failed", counts.get("failed", 0)),
             ("Out of scope", counts.get("out-of-scope", 0)), ("Skipped", counts.get("skipped", 0)),
             ("Already screened on an earlier night", counts.get("already-screened", 0))]
    reasons: dict[str, int] = {}
    for entry in failed:
        reasons[entry.reason] = reasons.get(entry.reason, 0) + 1
    out = ['<section id="summary"><h2>Summary</h2><table>']
    out += [f'<tr><th>{_e(label)}</th><td class="n" data-count="{_e(label)}">{int(n)}</td></tr>'
            for label, n in rows]
    out.append("</table>")
    if reasons:
        out.append("<p>Failed, by reason:</p><ul>" + "".join(
            f"<li>{_e(reason or 'unknown')}: {n}</li>" for reason, n in sorted(reasons.items())) + "</ul>")
    if page.earlier:
        out.append(f"<p>{page.earlier} studies of this folder were last screened on an earlier night "
                   "(in studies.csv, not listed here).</p>")
    out.append("</section>")
    return out


def _identity(page: NightPage, entry: StudyEntry) -> list[str]:
    cells = []
    if page.accession_shown:
        cells.append(("Accession", entry.accession_number or "(none)"))
    cells.append(("Study date", _date(entry.study_date) or "(none)"))
    if page.patient_id_shown:
        cells.append((_patient_label(page), entry.patient_id or "(none)"))
    return [f"{_e(label)}: <b>{_e(value)}</b>" for label, value in cells]


def _patient_label(page: NightPage) -> str:
    return "Patient ID (pseudonym)" if page.patient_id_policy == "hash" else "Patient ID"


def _flagged(page: NightPage, entry: StudyEntry, pictures: Sequence[Thumb]) -> list[str]:
    lower = " lower" if _is_lower(entry, page.levels) else ""
    score = finding_text(min(max(entry.fused_score or 0.0, 0.0), 1.0), entry.level or None)
    out = [f'<article class="study{lower}" data-study="{_e(entry.study_instance_uid)}" data-flagged="yes" '
           f'data-level="{_e(entry.level)}" '
           f'data-rank="{level_rank(entry.level, page.levels)}" data-score="{_e(entry.fused_score)}">',
           f"<h3>{_e(score)}</h3>", "<p>" + " &middot; ".join(_identity(page, entry)) + "</p>"]
    if entry.votes:
        out.append("<p>Members: " + ", ".join(_vote(v.member, v.vote, v.score) for v in entry.votes) + "</p>")
    out.append('<div class="thumbs">')
    for thumb in pictures:
        caption = _e("; ".join(thumb.texts) or "no box on this image")
        if thumb.link is None:
            out.append(f'<figure><div class="placeholder">image not available ({_e(thumb.problem)})</div>'
                       f"<figcaption>{caption}</figcaption></figure>")
        else:
            out.append(f'<figure><a href="{_e(thumb.link)}"><img src="{_e(thumb.link)}" width="{thumb.width}" '
                       f'height="{thumb.height}" alt="{caption}" data-loaded="no"></a>'
                       f"<figcaption>{caption}</figcaption></figure>")
    out.append("</div>")
    if entry.hidden_images:
        out.append(f"<p>{entry.hidden_images} more images not shown.</p>")
    out += _links(entry)
    out.append(f'<p class="uid">Study {_e(entry.study_instance_uid)}</p></article>')
    return out


def _vote(member: str, vote: bool | None, score: float | None) -> str:
    word = {True: "voted fracture", False: "no vote", None: "no result"}[vote]
    text = f"{_e(member)} {_percent(score)} ({word})"
    return f'<span class="voted">{text}</span>' if vote else text


def _links(entry: StudyEntry) -> list[str]:
    if not entry.links:
        return []
    return ["<p>Files: " + ", ".join(f'<a href="{_e(link)}">{_e(label)}</a>' for label, link in entry.links)
            + "</p>"]


def _table(anchor: str, title: str, page: NightPage, entries: Iterable[StudyEntry], *, score: bool = False,
           reason: bool = False, status: bool = False) -> list[str]:
    rows = list(entries)
    out = [f'<section id="{anchor}"><h2>{_e(title)}</h2>']
    if not rows:
        return out + ["<p>None.</p></section>"]
    head = (["Accession"] if page.accession_shown else []) + ["Study date"] + (
        [_patient_label(page)] if page.patient_id_shown else []) + (["Status"] if status else []) + (
        ["Result", "Fused score"] if score else []) + (["Reason"] if reason else []) + ["Files", "Study"]
    out.append("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>")
    for entry in rows:
        cells = ([entry.accession_number] if page.accession_shown else []) + [_date(entry.study_date)] + (
            [entry.patient_id] if page.patient_id_shown else []) + ([entry.status] if status else []) + (
            ["no AI finding", _percent(entry.fused_score)] if score else []) + ([entry.reason] if reason else [])
        files = ", ".join(f'<a href="{_e(link)}">{_e(label)}</a>' for label, link in entry.links)
        out.append(f'<tr class="study" data-study="{_e(entry.study_instance_uid)}" data-flagged="no" '
                   f'data-status="{_e(entry.status)}">'
                   + "".join(f"<td>{_e(c)}</td>" for c in cells)
                   + f'<td>{files}</td><td class="uid">{_e(entry.study_instance_uid)}</td></tr>')
    out.append("</table></section>")
    return out
