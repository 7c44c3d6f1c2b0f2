"""The Ray engine against the local engine on one machine: same archive, same members.

    python -m bench.engines [ARCHIVE] [--config site.toml] [--repeat 2]

Runs ``screen run`` on ARCHIVE (default: the sample archive with the demo members) alternately
with ``--engine local`` and ``--engine ray`` (a local Ray instance started once, outside the
timing, as a cluster would be running already), each into a fresh output folder, and prints
studies/s of each and their ratio measured in the same session. On one small machine the ratio
is Ray's overhead (task scheduling, the object store, member actors that start with each night);
the engine is for many machines, where ``bench.throughput`` projects what they give.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from screen.nightly.ray_engine import loopback_only, ray_session
from screen.nightly.runner import RunOptions, run_screen
from screen.site_config import PROJECT_ROOT, RayResources, load_site_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", nargs="?", type=Path, default=PROJECT_ROOT / "sample_data" / "archive")
    parser.add_argument("--config", type=Path, default=None, help="site config (default: sample_data/site.toml)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    site = load_site_config(args.config)
    if site.ray == RayResources():  # the defaults ask for 0.5 CPU a member: fit any machine of 2 cores or more
        site = site.replace(ray=RayResources(member_cpus=0.25))
    loopback_only()
    rates: dict[str, list[float]] = {"local": [], "ray": []}
    with ray_session(site.ray), tempfile.TemporaryDirectory() as work:
        for repeat in range(args.repeat):
            for engine in ("local", "ray"):
                start = time.perf_counter()
                summary = run_screen(args.archive, Path(work) / f"{engine}-{repeat}", config=site,
                                     options=RunOptions(engine=engine))
                seconds = time.perf_counter() - start
                studies = summary.counts.get("screened", 0)
                rates[engine].append(studies / seconds)
                print(f"{engine:>5} run {repeat + 1}: {studies} studies, {summary.images} images in {seconds:.1f} s "
                      f"= {studies / seconds:.2f} studies/s")
    local, ray = max(rates["local"]), max(rates["ray"])
    print(f"best of {args.repeat}: local {local:.2f} studies/s, ray {ray:.2f} studies/s; ray / local = {ray / local:.2f}")


if __name__ == "__main__":
    main()
