"""Throughput model: studies per hour of N GPU nodes, from per-stage costs measured here.

    python -m bench.throughput [ARCHIVE] [--config site.toml] [--nodes 1,2,4,8,16] [--cores 16]
                               [--gpus 1] [--gpu-rate MEMBER=IMAGES_PER_S ...] [--small N]

Measured here (``bench.run.stage_costs`` on ARCHIVE, default the sample archive with the demo
members): CPU milliseconds per image of the index (per file), the decode pipeline and the rest
of the night (fusion, SR/CSV/GSPS writing, ledger), and the images per study and files per image
of the archive. Assumed (printed as such): each member's images per second on one GPU (the
defaults below are placeholders for an H100-class card at the members' configured sizes, not
measurements: pass ``bench.gpu_members``' figures with ``--gpu-rate``), that a core of the
target box does the CPU work as fast as a core here, that the CPU stages spread over all cores
(the worker pool on one box; Ray tasks on a cluster), and that the driver does the ledger
commits alone (measured here: ``Ledger.record_study``'s CPU and wall time in the run, the larger
counts: a commit waits on the disk) while the writers run as tasks beside the members.

Per node: CPU images/s = cores x 1000 / (index x files per image + decode + rest); GPU images/s =
gpus / sum over members of 1 / rate (the members share each card in turn). The cluster does
min(nodes x min(CPU, GPU), driver) images/s; the smallest term is the bottleneck, named.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: Assumed images/s of each member kind on one GPU (placeholders, not measurements).
ASSUMED_GPU_RATES: dict[str, float] = {"paligemma-classifier": 120.0, "paligemma-detector": 8.0, "detr": 60.0}


@dataclass(frozen=True)
class Projection:
    """One cluster size's projection.

    Attributes:
        nodes: GPU nodes.
        cpu_images_s: what the CPU side of one node can prepare and write, images/s.
        gpu_images_s: what the GPUs of one node can score, images/s.
        driver_images_s: what the single driver can commit to the ledger, images/s.
        studies_per_hour: the cluster's studies per hour.
        bottleneck: ``cpu``, ``gpu`` or ``driver``.
    """

    nodes: int
    cpu_images_s: float
    gpu_images_s: float
    driver_images_s: float
    studies_per_hour: float
    bottleneck: str


def project(costs: dict[str, float], rates: dict[str, float], *, nodes: int, cores: int,
            gpus: int) -> Projection:
    """Studies per hour of ``nodes`` nodes with ``cores`` cores and ``gpus`` GPUs each.

    Args:
        costs: ``bench.run.stage_costs``' figures (CPU ms per image; ``index`` per file).
        rates: images/s of each member on one GPU.

    Raises:
        ValueError: no member rate, or a count below 1.
    """
    if not rates or min(nodes, cores, gpus) < 1:
        raise ValueError("need at least one member rate and nodes, cores, gpus >= 1")
    images, files, studies = costs["images"], costs["files"], max(costs["studies"], 1.0)
    cpu_ms = costs["index"] * files / max(images, 1.0) + costs["decode"] + costs["rest"]
    cpu = cores * 1000.0 / cpu_ms if cpu_ms > 0 else float("inf")
    gpu = gpus / sum(1.0 / rate for rate in rates.values())
    commit = max(costs["ledger"], costs.get("ledger-wall", 0.0))  # one driver: CPU or the disk's wait
    driver = 1000.0 / commit if commit > 0 else float("inf")
    limits = {"cpu": nodes * cpu, "gpu": nodes * gpu, "driver": driver}
    bottleneck = min(limits, key=lambda k: limits[k])
    per_study = images / studies
    return Projection(nodes, cpu, gpu, driver, 3600.0 * limits[bottleneck] / per_study, bottleneck)


def member_rates(kinds: dict[str, str], given: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """Each member's GPU rate: given (``--gpu-rate``) or assumed by its kind; and which were assumed."""
    rates, assumed = {}, []
    for name, kind in kinds.items():
        if name in given:
            rates[name] = given[name]
        else:
            rates[name] = ASSUMED_GPU_RATES.get(kind, min(ASSUMED_GPU_RATES.values()))
            assumed.append(name)
    return rates, assumed


def format_projection(costs: dict[str, float], rates: dict[str, float], assumed: list[str],
                      rows: list[Projection], cores: int, gpus: int) -> str:
    """The measured figures, the assumed ones, and one line per cluster size."""
    lines = ["measured here (CPU ms per image, all processes; a shared 2-core machine):"]
    lines.append(f"  index {costs['index'] * costs['files'] / max(costs['images'], 1):.2f} "
                 f"(per file {costs['index']:.2f}), decode {costs['decode']:.2f}, rest {costs['rest']:.2f} "
                 f"(ledger {costs['ledger']:.2f}, {costs.get('ledger-wall', 0.0):.2f} wall); "
                 f"{costs['images'] / max(costs['studies'], 1):.2f} images a study")
    lines.append("GPU images/s per member on one card:")
    for name, rate in rates.items():
        lines.append(f"  {name:<20} {rate:8.1f}  ({'assumed' if name in assumed else 'given'})")
    lines.append(f"assumed: a core there = a core here; CPU stages spread over {cores} cores; {gpus} GPU(s) a node")
    lines.append(f"{'nodes':>5} {'CPU img/s':>10} {'GPU img/s':>10} {'driver img/s':>12} {'studies/hour':>13}  bottleneck")
    for p in rows:
        lines.append(f"{p.nodes:>5} {p.cpu_images_s:>10.1f} {p.gpu_images_s:>10.1f} {p.driver_images_s:>12.1f} "
                     f"{p.studies_per_hour:>13,.0f}  {p.bottleneck}")
    return "\n".join(lines)


def _rate(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gpu-rate wants MEMBER=IMAGES_PER_S, got {text!r}") from None


def main() -> None:
    from bench.ingest import SAMPLE, write_small_archive
    from bench.run import format_costs, stage_costs
    from ensembles.checkpoint import read_member_spec
    from screen.site_config import load_site_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", nargs="?", type=Path, default=SAMPLE)
    parser.add_argument("--config", type=Path, default=None, help="site config (default: sample_data/site.toml)")
    parser.add_argument("--nodes", default="1,2,4,8,16")
    parser.add_argument("--cores", type=int, default=16, help="CPU cores per node")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per node")
    parser.add_argument("--gpu-rate", type=_rate, action="append", default=[], metavar="MEMBER=IMAGES_PER_S")
    parser.add_argument("--small", type=int, default=0, metavar="N", help="measure N small files instead")
    parser.add_argument("--members", action="store_true", help="also measure each member alone on this CPU")
    args = parser.parse_args()
    config = load_site_config(args.config)
    with tempfile.TemporaryDirectory() as scratch:
        archive = write_small_archive(Path(scratch), args.small) if args.small else args.archive
        costs = stage_costs(archive, config, members=args.members)
    print(format_costs(costs))
    kinds = {m.name: str(read_member_spec(m.checkpoint).kind) for m in config.members}
    rates, assumed = member_rates(kinds, dict(args.gpu_rate))
    rows = [project(costs, rates, nodes=int(n), cores=args.cores, gpus=args.gpus) for n in args.nodes.split(",")]
    print(format_projection(costs, rates, assumed, rows, args.cores, args.gpus))


if __name__ == "__main__":
    main()
