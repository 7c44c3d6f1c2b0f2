"""False-alarm rate of ``screen monitor``'s default thresholds, measured by simulation.

    python -m bench.monitor_false_alarms [--trials 2000] [--reference 112] [--night 24] [--seed 0]

No drift at all: every trial draws a tuning set (``--reference`` studies, the size of the demo's
tuning split) and recent nights of ``--night`` studies from the *same* population, pools nights
as the monitor does until ``[monitor] min_studies`` (default 200) screened studies, and runs the
monitor's own checks (:func:`screen.monitor.checks.evaluate`, default
:class:`~screen.site_config.MonitorSettings`) on them. It prints the share of trials that raised
an alarm with its exact 95 % interval, and, for comparison, how often PSI alone exceeds 0.25 on
a single night (the naive rule) and how often each statistical check alone would be significant
without Holm's correction.

The population: 45 % fracture studies; a study's latent severity is normal around +1.2 for a
fracture and -1.2 for a normal one; each of three members scores ``sigmoid(latent + noise)``
(member noise sd 0.8, so the members agree as real ones do), the fused score is the highest
member score and a study is flagged when it reaches 0.5 (an any-vote). Unseen devices and
failures are not simulated (they are not statistical: a new device is a fact).

A drifted population (``--drift``, a shift of every member's logit) shows the power of the same
defaults.
"""

from __future__ import annotations

import argparse

import numpy as np

from ensembles.operating_point.calibration import FUSED
from ensembles.operating_point.reference import Reference
from ensembles.operating_point.schema import Estimate
from screen.monitor.checks import evaluate
from screen.monitor.stats import exact_interval, psi
from screen.site_config import MonitorSettings

MEMBERS = ("m1", "m2", "m3")


def _draw(rng: np.random.Generator, n: int, drift: float = 0.0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    fracture = rng.random(n) < 0.45
    latent = np.where(fracture, 1.2, -1.2) + rng.normal(0, 1.0, n)
    scores = {m: 1 / (1 + np.exp(-(latent + drift + rng.normal(0, 0.8, n)))) for m in MEMBERS}
    scores[FUSED] = np.max(np.stack([scores[m] for m in MEMBERS]), axis=0)
    return scores, scores[FUSED] >= 0.5


def _reference(rng: np.random.Generator, n: int) -> Reference:
    scores, flagged = _draw(rng, n)
    k = int(flagged.sum())
    low, high = exact_interval(k, n)
    return Reference(n_studies=n, positives=0, negatives=0,
                     scores={name: sorted(round(float(v), 6) for v in values) for name, values in scores.items()},
                     flag_rate=Estimate(value=k / n, ci_low=min(low, k / n), ci_high=max(high, k / n), n=n))


def _window(rng: np.random.Generator, settings: MonitorSettings, night: int,
            drift: float) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    runs, rows = [], []
    i = 0
    while len(runs) < settings.nights or len(rows) < settings.min_studies:
        scores, flagged = _draw(rng, night, drift)
        run_id = f"run-{i}"
        runs.append({"run_id": run_id, "started_at": f"2026-01-{1 + i % 28:02d}"})
        rows += [{"run_id": run_id, "status": "screened", "flagged": bool(flagged[j]),
                  "scores": {name: float(v[j]) for name, v in scores.items()}, "manufacturer": "",
                  "model": "", "body_part": ""} for j in range(night)]
        i += 1
    return runs, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--reference", type=int, default=112)
    parser.add_argument("--night", type=int, default=24)
    parser.add_argument("--drift", type=float, default=0.0, help="logit shift of every member's score")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = MonitorSettings()
    rng = np.random.default_rng(args.seed)
    alarms = naive = 0
    raw = {name: 0 for name in (*MEMBERS, FUSED, "flag-rate")}
    for _ in range(args.trials):
        reference = _reference(rng, args.reference)
        runs, rows = _window(rng, settings, args.night, args.drift)
        report = evaluate(list(reversed(runs)), rows, reference, settings)
        alarms += report.alarm
        one_night = [r["scores"][FUSED] for r in rows[:args.night]]  # type: ignore[index]
        naive += psi(reference.scores[FUSED], one_night) > 0.25
        for check in report.checks:
            key = check.name.removeprefix("score:")
            if key in raw and check.p_value is not None and check.p_value < settings.alpha:
                raw[key] += 1
    low, high = exact_interval(alarms, args.trials)
    pooled = len(rows)
    print(f"defaults: nights {settings.nights}, min_studies {settings.min_studies}, alpha {settings.alpha} "
          f"(Holm), psi_threshold {settings.psi_threshold}, min_flag_rate_change {settings.min_flag_rate_change}")
    print(f"tuning set {args.reference} studies; nights of {args.night} studies pooled to {pooled}; "
          f"logit drift {args.drift:g}; {args.trials} trials, seed {args.seed}")
    print(f"alarm rate: {alarms}/{args.trials} = {alarms / args.trials:.4f} (exact 95 % CI {low:.4f}-{high:.4f})")
    print(f"naive rule, PSI(fused) > 0.25 on one {args.night}-study night: {naive / args.trials:.3f}")
    print("each check alone at p < alpha, no correction: "
          + ", ".join(f"{k} {v / args.trials:.4f}" for k, v in raw.items()))


if __name__ == "__main__":
    main()
