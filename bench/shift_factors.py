"""Which rendering factor breaks the members? The training style with one factor group shifted.

    python -m bench.shift_factors --out WORK [--config sample_data/site.toml] [--studies 150]
        [--seed 20261206] [--groups exposure,window] [--held-out shifted|shifted-2]
        [--base randomised|wide] [--json FILE]

For the baseline (the members' training style, ``randomised`` by default or ``wide``: the
training rendering, fresh patients), for each factor group of
:data:`dicom_io.phantom.style_ranges.FACTOR_GROUPS` (the baseline with that group's ranges taken
from the held-out style, ``shifted`` by default:
:func:`~dicom_io.phantom.style_ranges.blend`) and for the whole held-out style, it draws a
phantom archive of ``--studies`` studies (one seed for all, so the studies, patients and labels
are the same and only the look differs), runs ``screen eval`` of the site config on it, and
prints each member's and the fused score's study AUC (with a percentile bootstrap interval over
studies) and its change from the baseline. A group
whose change is large is what the members are fragile to; a group near zero is one they already
ignore; the intervals say which changes a set of this size can tell from noise (the variants
draw other images for the same studies, so the changes are not paired). Archives and
evaluations stay in ``WORK``: a rerun reuses an archive it already drew, and with ``--reuse``
an evaluation already there (only for the same site config).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dicom_io.phantom import PhantomConfig, write_phantom_archive
from dicom_io.tables import PREDICTIONS, read_table
from dicom_io.phantom.style_ranges import FACTOR_GROUPS, HELD_OUT_STYLES, STYLE_RANGES, StyleRanges, blend
from train.metrics import bootstrap_auc

BASELINE = "randomised"
WHOLE = "shifted"
#: The training styles a baseline can be (the measurement styles are never one).
BASES = tuple(name for name in STYLE_RANGES if name not in HELD_OUT_STYLES)


def variants(groups: tuple[str, ...], held_out: str = WHOLE, base: str = BASELINE) -> dict[str, StyleRanges]:
    """The baseline (the training style ``base``), one variant per group (the baseline with that
    group taken from the held-out style), and the whole held-out style, by name; the baseline
    comes first."""
    shifted, start = HELD_OUT_STYLES[held_out].ranges, STYLE_RANGES[base]
    out = {base: start}
    out.update({f"+{group}": blend(start, shifted, (group,)) for group in groups})
    out[held_out] = shifted
    return out


def folder_name(variant: str, held_out: str = WHOLE, base: str = BASELINE) -> str:
    """Where a variant's archive and evaluation live under ``--out``: the baseline and the whole
    styles by name, ``shifted``'s groups by group name (as before there was a second held-out
    style), another style's as ``<style>+<group>`` (so both can share one ``--out``); a baseline
    other than ``randomised`` puts all of its variants under ``base-<name>/``."""
    if variant in (base, held_out) or held_out == WHOLE:
        name = variant.lstrip("+")
    else:
        name = f"{held_out}{variant}"
    return name if base == BASELINE else f"base-{base}/{name}"


def draw(folder: Path, ranges: StyleRanges, studies: int, seed: int, base: str = BASELINE) -> tuple[Path, Path]:
    """The variant's archive and labels in ``folder`` (reused when ``folder`` holds this one);
    drawn under the baseline's style name, so every variant of one baseline has the same studies."""
    archive, labels = folder / "archive", folder / "labels.csv"
    stamp = folder / "drawn.json"
    config = PhantomConfig(n_studies=studies, seed=seed, style=base)
    # the config's fingerprint carries the generator's version (PHANTOM_VERSION) beside the ranges
    wanted = {"ranges": repr(ranges), "phantom": config.fingerprint()}
    if stamp.is_file() and labels.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == wanted:
        return archive, labels
    folder.mkdir(parents=True, exist_ok=True)
    write_phantom_archive(archive, labels, config, overwrite=True, ranges=ranges)
    stamp.write_text(json.dumps(wanted), encoding="utf-8")
    return archive, labels


def aucs(predictions: Path, resamples: int = 1000) -> dict[str, tuple[float, float, float]]:
    """``(AUC, low, high)`` per member (``score:<name>``) and of the fused score (``ensemble``),
    from ``screen eval``'s ``predictions.csv`` (one row per study)."""
    table = read_table(predictions, PREDICTIONS)
    truth = (table["label"] == "fracture").to_numpy()
    out: dict[str, tuple[float, float, float]] = {}
    for column in table.columns:
        if column.startswith("score:") or column == "fused_score":
            name = column.removeprefix("score:") if column != "fused_score" else "ensemble"
            interval = bootstrap_auc(truth, table[column].to_numpy(dtype=float), n_resamples=resamples)
            out[name] = (interval.value, interval.low, interval.high)
    return out


def measure(out: Path, config: Path | None, studies: int, seed: int, groups: tuple[str, ...],
            workers: int | None = None, reuse: bool = False, held_out: str = WHOLE, base: str = BASELINE
            ) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Study AUCs per variant (see the module docstring)."""
    from screen.commands.eval import run_eval

    results: dict[str, dict[str, tuple[float, float, float]]] = {}
    for name, ranges in variants(groups, held_out, base).items():
        folder = out / folder_name(name, held_out, base)
        archive, labels = draw(folder, ranges, studies, seed, base)
        predictions = folder / "eval" / "predictions.csv"
        if not (reuse and predictions.is_file()
                and predictions.stat().st_mtime > (folder / "drawn.json").stat().st_mtime):
            run_eval(archive, folder / "eval", labels_csv=labels, config_path=config, bootstrap=0,
                     workers=workers)
        results[name] = aucs(predictions)
        print(f"{name}: " + ", ".join(f"{k} {v[0]:.3f}" for k, v in results[name].items()), flush=True)
    return results


def table(results: dict[str, dict[str, tuple[float, float, float]]]) -> list[str]:
    """The Markdown table: study AUC (95 % interval) per variant and model, and its change from
    the baseline (the first variant)."""
    first = next(iter(results))
    models = list(results[first])
    lines = ["| variant | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    base = results[first]
    for name, row in results.items():
        cells = []
        for m in models:
            value, low, high = row[m]
            change = "" if name == first else f"; {value - base[m][0]:+.3f}"
            cells.append(f"{value:.3f} ({low:.2f}-{high:.2f}{change})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (archives, evaluations)")
    parser.add_argument("--config", type=Path, default=None,
                        help="site config of the members (default: the embedded default)")
    parser.add_argument("--studies", type=int, default=150)
    parser.add_argument("--seed", type=int, default=20261206)
    parser.add_argument("--groups", default=",".join(FACTOR_GROUPS),
                        help="comma-separated factor groups (default: all)")
    parser.add_argument("--held-out", choices=sorted(HELD_OUT_STYLES), default=WHOLE,
                        help="the measurement style whose factor groups are taken (default: shifted)")
    parser.add_argument("--base", choices=BASES, default=BASELINE,
                        help="the members' training style the groups are put into (default: randomised)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--reuse", action="store_true",
                        help="reuse evaluations already in --out (made with the same --config)")
    parser.add_argument("--json", type=Path, default=None, help="also write the AUCs here")
    args = parser.parse_args(argv)
    groups = tuple(g for g in args.groups.split(",") if g)
    unknown = [g for g in groups if g not in FACTOR_GROUPS]
    if unknown or args.studies < 4:
        print(f"error: unknown group(s) {', '.join(unknown)}; choose from {', '.join(FACTOR_GROUPS)}"
              if unknown else "error: --studies must be at least 4", file=sys.stderr)
        return 2
    results = measure(args.out, args.config, args.studies, args.seed, groups, args.workers, args.reuse,
                      args.held_out, args.base)
    print("\n".join(table(results)))
    if args.json is not None:
        args.json.write_text(json.dumps({"studies": args.studies, "seed": args.seed, "held_out": args.held_out,
                                         "base": args.base, "aucs": results},
                                        indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
