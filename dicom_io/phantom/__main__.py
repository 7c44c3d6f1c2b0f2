"""``python -m dicom_io.phantom OUT --labels CSV --studies N --seed S``: write a phantom archive.

The same as ``screen phantom`` without Click, so the sample archive can be regenerated from a
bare checkout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dicom_io.phantom.archive import write_phantom_archive
from dicom_io.phantom.config import PhantomConfig, PhantomError


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, write the archive, print a one-line summary; 2 on a bad config."""
    defaults = PhantomConfig()
    parser = argparse.ArgumentParser(prog="python -m dicom_io.phantom", description=__doc__)
    parser.add_argument("out_dir", type=Path, help="folder for the DICOM tree (empty or absent)")
    parser.add_argument("--labels", type=Path, required=True, help="labels CSV to write")
    parser.add_argument("--studies", type=int, default=defaults.n_studies, help="number of studies")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of everything random")
    parser.add_argument(
        "--positive-fraction", type=float, default=defaults.positive_fraction,
        help="share of studies with a fracture",
    )  # fmt: skip
    parser.add_argument(
        "--size", type=int, nargs=2, metavar=("MIN", "MAX"), default=list(defaults.size_range),
        help="inclusive range of rows and columns",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace phantom files in a non-empty OUT")
    args = parser.parse_args(argv)
    try:
        config = PhantomConfig(
            n_studies=args.studies,
            seed=args.seed,
            positive_fraction=args.positive_fraction,
            size_range=(args.size[0], args.size[1]),
        )
        summary = write_phantom_archive(args.out_dir, args.labels, config, overwrite=args.overwrite)
    except PhantomError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    print(
        f"wrote {summary.n_images} images in {summary.n_studies} studies "
        f"({summary.n_positive_studies} positive, {summary.n_boxes} boxes) to {summary.out_dir}, "
        f"{summary.total_bytes / 1e6:.1f} MB; labels in {summary.labels_csv}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
