"""The checks of ``screen monitor`` and of the end of ``screen run``, and when they alarm.

A *window* is the newest ``nights`` runs of the folder's ledger, extended run by run into the
past while it holds fewer than ``min_studies`` screened studies (a night of 24 studies is too
few: PSI alone would exceed 0.25 on most such nights without any drift). Over the window:

- **score drift**, per member and for the fused score: the two-sample KS test of the window's
  raw study scores against the reference's, and the PSI;
- **flag rate**: flagged / screened with its exact interval, against the tuning set's flag rate
  (Fisher's exact test: the tuning set is a sample too); per night, the band a night of that size shows at the reference rate;
- **failures and skips**: shares of the window's studies that failed, were skipped or were out
  of scope; an alarm above ``max_failure_rate``;
- **unseen acquisition**: devices (Manufacturer + ManufacturerModelName) and body parts of
  screened studies that the tuning set never held.

The statistical checks (KS per score, flag rate, and the reads' sensitivity and specificity)
form one family: Holm's correction keeps its family-wise false-alarm rate at ``alpha``. A
statistical check alarms only when its adjusted p-value is below ``alpha`` and its effect is
material (PSI >= ``psi_threshold``; flag rate moved by >= ``min_flag_rate_change``; a read
figure below its promise). Below ``min_studies`` the statistical checks are reported as
``insufficient`` and never alarm.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ensembles.operating_point.calibration import FUSED
from ensembles.operating_point.point import OperatingPoint
from ensembles.operating_point.reference import Reference
from screen.monitor.reads import ReadsReport
from screen.monitor.verdict import Check
from screen.monitor.stats import binomial_band, binomial_p, exact_interval, holm, ks_test, psi, two_proportions_p
from screen.nightly.ledger import Ledger
from screen.site_config import MonitorSettings

__all__ = ["Check", "MonitorReport", "Night", "evaluate", "gather", "monitor_ledger"]

SCREENED, FAILED = "screened", "failed"


@dataclass(frozen=True)
class Night:
    """One run of the window.

    Attributes:
        run_id: the run.
        started_at: when it started (ISO 8601).
        studies: studies it recorded (every status).
        screened: of them, screened.
        flagged: of those, flagged by the deciding point.
        band: the central 95 % range of the flag rate a night of ``screened`` studies shows at
            the reference's rate.
    """

    run_id: str
    started_at: str
    studies: int
    screened: int
    flagged: int
    band: tuple[float, float]

    @property
    def flag_rate(self) -> float:
        return self.flagged / self.screened if self.screened else float("nan")


@dataclass
class MonitorReport:
    """What ``screen monitor`` found (``monitor.json`` is :meth:`to_dict`)."""

    nights: list[Night]
    screened: int
    min_studies: int
    checks: list[Check]
    reference_studies: int
    recent: dict[str, list[float]] = field(default_factory=dict)  # raw scores, for the plots
    reference_rate: float = float("nan")
    reads: ReadsReport | None = None

    @property
    def sufficient(self) -> bool:
        return self.screened >= self.min_studies

    @property
    def alarms(self) -> list[str]:
        """One short line per alarm."""
        return [f"{c.name}: {c.detail}" for c in self.checks if c.alarm]

    @property
    def alarm(self) -> bool:
        return any(c.alarm for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "alarm": self.alarm, "alarms": self.alarms, "screened": self.screened,
            "min_studies": self.min_studies, "sufficient": self.sufficient,
            "reference_studies": self.reference_studies, "reference_flag_rate": self.reference_rate,
            "runs": [{**asdict(n), "flag_rate": n.flag_rate} for n in self.nights],
            "checks": [asdict(c) for c in self.checks],
            "reads": None if self.reads is None else self.reads.to_dict(),
        }


def gather(ledger: Ledger, *, nights: int, min_studies: int,
           until: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The window's runs (newest first) and their ``run_studies`` rows (see the module docstring)."""
    runs = ledger.recent_runs(until=until)
    chosen: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for run in runs:
        found = ledger.run_studies([run["run_id"]])
        screened = sum(1 for r in rows if r["status"] == SCREENED)
        if len(chosen) >= nights and screened >= min_studies:
            break
        if found or len(chosen) < nights:
            chosen.append(run)
            rows.extend(found)
    return chosen, rows


def _score_checks(rows: list[dict[str, Any]], reference: Reference, settings: MonitorSettings,
                  recent: dict[str, list[float]]) -> list[Check]:
    out = []
    names = [n for n in reference.scores if n != FUSED] + ([FUSED] if FUSED in reference.scores else [])
    for name in names:
        values = [r["scores"][name] for r in rows if r["status"] == SCREENED and name in r["scores"]]
        recent[name] = values
        ref = reference.sample(name)
        if ref is None or not values:
            out.append(Check(f"score:{name}", "not-checked", detail="no scores in the window"))
            continue
        stat, p = ks_test(ref, values)
        index = psi(ref, values)
        out.append(Check(f"score:{name}", "ok", p_value=p, figures={
            "ks": stat, "psi": index, "n": len(values), "reference_n": int(ref.size),
            "median": float(np.median(values)), "reference_median": float(np.median(ref))},
            detail=f"median {np.median(values):.3f} (tuning {np.median(ref):.3f}), PSI {index:.2f}, "
                   f"KS {stat:.2f}"))
    return out


def _flag_check(rows: list[dict[str, Any]], reference: Reference) -> Check:
    screened = [r for r in rows if r["status"] == SCREENED and r["flagged"] is not None]
    n, k = len(screened), sum(1 for r in screened if r["flagged"])
    if not n:
        return Check("flag-rate", "not-checked", detail="no screened study in the window")
    rate, ref = k / n, reference.flag_rate
    low, high = exact_interval(k, n)
    ref_n = ref.n or 0
    p = two_proportions_p(k, n, round(ref.value * ref_n), ref_n) if ref_n else binomial_p(k, n, ref.value)
    return Check("flag-rate", "ok", p_value=p, figures={
        "flagged": k, "screened": n, "rate": rate, "ci_low": low, "ci_high": high,
        "reference": ref.value, "reference_ci_low": ref.ci_low, "reference_ci_high": ref.ci_high},
        detail=f"{k}/{n} = {rate:.2f} flagged [{low:.2f}, {high:.2f}] (tuning {ref.value:.2f} "
               f"[{ref.ci_low:.2f}, {ref.ci_high:.2f}])")


def _failure_check(rows: list[dict[str, Any]], settings: MonitorSettings) -> Check:
    counts = Counter(r["status"] for r in rows)
    total = sum(counts.values())
    if not total:
        return Check("failures", "not-checked", detail="no study in the window")
    failed = counts.get(FAILED, 0) / total
    skipped = (counts.get("skipped", 0) + counts.get("out-of-scope", 0)) / total
    status = "alarm" if failed > settings.max_failure_rate else "ok"
    return Check("failures", status, figures={"studies": total, "failure_rate": failed, "skip_rate": skipped,
                                              "counts": dict(counts)},
                 detail=f"{counts.get(FAILED, 0)} of {total} studies failed ({100 * failed:.1f} %, "
                        f"at most {100 * settings.max_failure_rate:.1f} % allowed); {100 * skipped:.1f} % "
                        "skipped or out of scope")


def _unseen_checks(rows: list[dict[str, Any]], reference: Reference, settings: MonitorSettings) -> list[Check]:
    if not reference.mix:
        return [Check("devices", "not-checked", detail="the reference has no acquisition mix (retune with "
                                                      "a predictions file that has the acquisition columns)")]
    screened = [r for r in rows if r["status"] == SCREENED]
    devices = Counter((r["manufacturer"], r["model"]) for r in screened
                      if (r["manufacturer"], r["model"]) not in reference.seen_devices())
    parts = Counter(r["body_part"] for r in screened if r["body_part"] not in reference.seen("body_part"))
    status = "alarm" if settings.alarm_on_unseen else "ok"
    out = []
    shown = "; ".join(f"{m or '(no Manufacturer)'} {d or '(no model)'} ({k})" for (m, d), k in devices.most_common())
    out.append(Check("devices", status if devices else "ok",
                     figures={"unseen": [{"manufacturer": m, "model": d, "studies": k}
                                         for (m, d), k in devices.most_common()]},
                     detail=f"devices never seen in tuning: {shown}" if devices else "every device seen in tuning"))
    listed = ", ".join(f"{p or '(none)'} ({k})" for p, k in parts.most_common())
    out.append(Check("body-parts", status if parts else "ok",
                     figures={"unseen": [{"body_part": p, "studies": k} for p, k in parts.most_common()]},
                     detail=f"body parts never seen in tuning: {listed}" if parts else
                     "every body part seen in tuning"))
    return out


def _judge(check: Check, adjusted: float, settings: MonitorSettings, sufficient: bool) -> Check:
    """The verdict of a statistical check: significant after Holm and material."""
    if check.name.startswith("score:"):
        material = check.figures["psi"] >= settings.psi_threshold
        needs_window = True
    elif check.name == "flag-rate":
        material = abs(check.figures["rate"] - check.figures["reference"]) >= settings.min_flag_rate_change
        needs_window = True
    else:  # reads: below the promise
        material = check.figures["value"] < check.figures["promise"]
        needs_window = False
    if needs_window and not sufficient:
        status = "insufficient"
    else:
        status = "alarm" if adjusted < settings.alpha and material else "ok"
    return Check(check.name, status, check.p_value, adjusted, check.figures, check.detail)


def evaluate(runs: list[dict[str, Any]], rows: list[dict[str, Any]], reference: Reference,
             settings: MonitorSettings, reads: ReadsReport | None = None) -> MonitorReport:
    """Every check over the window's ``rows`` (see the module docstring)."""
    recent: dict[str, list[float]] = {}
    screened = sum(1 for r in rows if r["status"] == SCREENED)
    sufficient = screened >= settings.min_studies
    family = _score_checks(rows, reference, settings, recent) + [_flag_check(rows, reference)]
    if reads is not None:
        family += reads.checks()
    tested = [c for c in family if c.p_value is not None]
    adjusted = holm([c.p_value for c in tested if c.p_value is not None])
    verdicts = {id(c): _judge(c, a, settings, sufficient) for c, a in zip(tested, adjusted)}
    checks = [verdicts.get(id(c), c) for c in family]
    checks += [_failure_check(rows, settings), *_unseen_checks(rows, reference, settings)]
    by_run: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_run.setdefault(str(r["run_id"]), []).append(r)
    nights = []
    for run in reversed(runs):  # oldest first, as the plot reads
        found = by_run.get(str(run["run_id"]), [])
        done = [r for r in found if r["status"] == SCREENED and r["flagged"] is not None]
        nights.append(Night(str(run["run_id"]), str(run["started_at"]), len(found), len(done),
                            sum(1 for r in done if r["flagged"]),
                            binomial_band(reference.flag_rate.value, len(done))))
    return MonitorReport(nights, screened, settings.min_studies, checks, reference.n_studies, recent,
                         reference.flag_rate.value, reads)


def monitor_ledger(ledger: Ledger, point: OperatingPoint, settings: MonitorSettings, *,
                   nights: int | None = None, until: str | None = None,
                   reads: ReadsReport | None = None) -> MonitorReport | None:
    """:func:`evaluate` over the folder's window; ``None`` when ``point`` has no reference."""
    if point.reference is None:
        return None
    runs, rows = gather(ledger, nights=nights or settings.nights, min_studies=settings.min_studies, until=until)
    return evaluate(runs, rows, point.reference, settings, reads)
