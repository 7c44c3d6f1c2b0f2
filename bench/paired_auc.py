"""Did a change rank studies better? Two ``screen eval`` runs on the same studies, compared.

    python -m bench.paired_auc BEFORE/predictions.csv AFTER/predictions.csv [--resamples 2000] [--seed 0]

For every score the two files share (each member's ``score:<member>`` and ``fused_score``) it
prints the study AUC of each and their difference with a *paired* percentile bootstrap interval
(:func:`train.metrics.bootstrap_auc_difference`: each resample draws the same studies for both),
which is what tells a real change from the noise of one set: two separate intervals overlap long
after the paired one has left zero. The files must hold the same studies with the same labels
(two configs, checkpoints or settings measured on one archive).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from dicom_io.tables import PREDICTIONS, TableError, read_table
from train.metrics import bootstrap_auc_difference, roc_auc


def paired_rows(before: Path, after: Path, *, resamples: int = 2000,
                seed: int = 0) -> list[tuple[str, float, float, float, float, float]]:
    """``(score, AUC before, AUC after, difference, low, high)`` per shared score column.

    Raises:
        ValueError: the files hold other studies or other labels.
        TableError: a file is missing or is not a predictions file.
    """
    first, second = read_table(before, PREDICTIONS), read_table(after, PREDICTIONS)
    keys = ["study_instance_uid", "label"]
    joined = pd.merge(first, second, on=keys, suffixes=(" before", " after"), how="outer", indicator=True)
    if not (joined["_merge"] == "both").all():
        raise ValueError(f"{before} and {after} do not hold the same studies with the same labels "
                         f"({int((joined['_merge'] != 'both').sum())} rows differ)")
    truth = (joined["label"] == "fracture").to_numpy()
    columns = [c for c in first.columns if (c.startswith("score:") or c == "fused_score") and c in second.columns]
    rows = []
    for column in columns:
        a, b = joined[f"{column} before"].to_numpy(float), joined[f"{column} after"].to_numpy(float)
        found = bootstrap_auc_difference(truth, a, b, n_resamples=resamples, seed=seed)
        rows.append((column, roc_auc(truth, a), roc_auc(truth, b), found.value, found.low, found.high))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="predictions.csv of the first run")
    parser.add_argument("after", type=Path, help="predictions.csv of the second run, same studies")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        rows = paired_rows(args.before, args.after, resamples=args.resamples, seed=args.seed)
    except (ValueError, TableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'score':<16} {'AUC before':>10} {'AUC after':>10} {'change':>8}  paired 95% interval")
    for column, a, b, delta, low, high in rows:
        print(f"{column:<16} {a:>10.3f} {b:>10.3f} {delta:>+8.3f}  {low:+.3f} to {high:+.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
