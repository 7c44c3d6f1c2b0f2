"""Realised performance: the radiologists' final reads against the screener's decisions.

``screen monitor OUT --reads reads.csv`` (:data:`dicom_io.tables.READS`: StudyInstanceUID or
accession number, ``fracture`` yes/no, ``read_date``) is matched with the folder's studies (their
latest screened decision in the ledger). Per ISO week of the read date, and pooled over every
read, it reports the realised sensitivity (flagged among read fractures) and specificity
(not flagged among read normals) with exact (Clopper-Pearson) 95 % intervals, against the
operating point's promise: its out-of-fold figure from ``screen tune`` (the in-sample one when
there is none). The pooled figures are tested one-sided (exact binomial: is the realised rate
below the promise?) inside ``screen monitor``'s Holm family; an alarm needs that test to be
significant and the realised figure to lie below the promise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from dicom_io.tables import READS, read_table, records
from ensembles.operating_point.point import OperatingPoint
from screen.errors import ConfigError
from screen.monitor.stats import exact_interval, one_sided_below_p
from screen.monitor.verdict import Check
from screen.nightly.ledger import Ledger

__all__ = ["Realised", "ReadsReport", "match_reads", "promise_of", "read_reads"]


@dataclass(frozen=True)
class Realised:
    """Sensitivity and specificity over one period.

    Attributes:
        period: ``YYYY-Www`` (ISO week of the read date) or ``all``.
        tp, positives: flagged studies among those read as fracture, and how many were.
        tn, negatives: studies not flagged among those read as normal, and how many were.
    """

    period: str
    tp: int
    positives: int
    tn: int
    negatives: int

    def figure(self, name: str) -> dict[str, Any]:
        hit, n = (self.tp, self.positives) if name == "sensitivity" else (self.tn, self.negatives)
        low, high = exact_interval(hit, n) if n else (float("nan"), float("nan"))
        return {"value": hit / n if n else float("nan"), "ci_low": low, "ci_high": high, "hits": hit, "n": n}

    def to_dict(self) -> dict[str, Any]:
        return {"period": self.period, "sensitivity": self.figure("sensitivity"),
                "specificity": self.figure("specificity")}


@dataclass
class ReadsReport:
    """The reads matched with the decisions, per week and pooled.

    Attributes:
        weeks: per ISO week of the read date, oldest first.
        pooled: every matched read.
        promise: ``{"sensitivity": value, "specificity": value}`` of the operating point.
        unmatched: reads naming no study the folder screened.
    """

    weeks: list[Realised]
    pooled: Realised
    promise: dict[str, float]
    unmatched: int = 0
    sources: dict[str, str] = field(default_factory=dict)  # figure -> where its promise came from

    def checks(self) -> list[Check]:
        """The pooled sensitivity and specificity as statistical checks (p-value: one-sided,
        realised below the promise)."""
        out = []
        for name in ("sensitivity", "specificity"):
            promise = self.promise.get(name)
            fig = self.pooled.figure(name)
            if promise is None or not fig["n"]:
                out.append(Check(name, "not-checked", detail="no promise in the operating point" if promise is None
                                 else f"no read {'fracture' if name == 'sensitivity' else 'normal'} study"))
                continue
            p = one_sided_below_p(fig["hits"], fig["n"], promise)
            out.append(Check(name, "ok", p_value=p, figures={**fig, "promise": promise},
                             detail=f"realised {fig['hits']}/{fig['n']} = {fig['value']:.3f} "
                                    f"[{fig['ci_low']:.3f}, {fig['ci_high']:.3f}] against the promised "
                                    f"{promise:.3f} ({self.sources.get(name, '')})"))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"weeks": [w.to_dict() for w in self.weeks], "pooled": self.pooled.to_dict(),
                "promise": dict(self.promise), "promise_sources": dict(self.sources), "unmatched": self.unmatched}


def promise_of(point: OperatingPoint) -> tuple[dict[str, float], dict[str, str]]:
    """The point's promised sensitivity and specificity (out of fold when measured), and where
    each came from."""
    prov = point.provenance
    promise: dict[str, float] = {}
    sources: dict[str, str] = {}
    for name in ("sensitivity", "specificity"):
        oof = getattr(prov.out_of_fold, name, None) if prov.out_of_fold is not None else None
        inside = getattr(prov, name)
        if oof is not None:
            promise[name], sources[name] = oof.value, "out of fold, screen tune"
        elif inside is not None:
            promise[name], sources[name] = inside.value, "in sample, screen tune"
    return promise, sources


def read_reads(path: Path) -> list[dict[str, Any]]:
    """The reads file's rows (``fracture`` as bool, ``read_date`` as a date).

    Raises:
        ConfigError: the file is missing or malformed, names neither column, or has a bad date.
    """
    if not path.is_file():
        raise ConfigError(f"reads file {str(path)!r} does not exist; give --reads a CSV with "
                          "study_instance_uid or accession_number, fracture (yes/no), read_date")
    frame = read_table(path, READS, error=ConfigError)
    if "study_instance_uid" not in frame.columns and "accession_number" not in frame.columns:
        raise ConfigError(f"reads file {str(path)!r} needs a study_instance_uid or an accession_number column")
    out = []
    for line, row in zip(frame.index, records(frame)):
        try:
            when = date.fromisoformat(str(row["read_date"]).strip())
        except ValueError:
            raise ConfigError(f"{path}, line {line}: read_date must be YYYY-MM-DD") from None
        out.append({"study_instance_uid": (row.get("study_instance_uid") or "").strip(),
                    "accession_number": (row.get("accession_number") or "").strip(),
                    "fracture": row["fracture"] == "yes", "read_date": when})
    return out


def match_reads(ledger: Ledger, reads: list[dict[str, Any]], point: OperatingPoint) -> ReadsReport:
    """Each read against the study's latest screened decision (see the module docstring)."""
    decided = {str(r["study_instance_uid"]): r.get("decision") == "positive"
               for r in ledger.study_rows() if r.get("status") == "screened"}
    by_accession = ledger.accession_index()
    weekly: dict[str, list[int]] = {}
    unmatched = 0
    for read in reads:
        uid = read["study_instance_uid"] or by_accession.get(read["accession_number"], "")
        if uid not in decided:
            unmatched += 1
            continue
        year, week, _ = read["read_date"].isocalendar()
        cell = weekly.setdefault(f"{year}-W{week:02d}", [0, 0, 0, 0])
        flagged = decided[uid]
        if read["fracture"]:
            cell[0] += int(flagged)
            cell[1] += 1
        else:
            cell[2] += int(not flagged)
            cell[3] += 1
    weeks = [Realised(k, *v) for k, v in sorted(weekly.items())]
    pooled = Realised("all", *(sum(w[i] for w in weekly.values()) for i in range(4)))
    promise, sources = promise_of(point)
    return ReadsReport(weeks, pooled, promise, unmatched, sources)
