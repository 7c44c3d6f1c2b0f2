"""``screen models``: which member kinds can run here, the site's checkpoints, importing and
checking a checkpoint.

- ``screen models [--config site.toml]``: every member kind, whether it can run on this machine
  (what is missing when not: this works without torch installed), and the site's members.
- ``screen models import SRC --kind K --out DIR --intended-use U``: a stock ``save_pretrained``
  folder becomes a member checkpoint (:func:`ensembles.member_import.import_member`).
- ``screen models check DIR``: every check the loader runs (:mod:`ensembles.member_check`);
  exit 2 naming each problem.
"""

from __future__ import annotations

from pathlib import Path

import click

from ensembles.checkpoint import INTENDED_USES
from ensembles.types import MemberKind


def models_report(config_path: Path | None) -> list[str]:
    """Lines for ``screen models``: every known kind and, with a config, its members."""
    from ensembles.registry import kind_info, list_members, missing_requirements

    lines = [f"{'kind':<22} {'runs here':<10} description"]
    for kind in list_members():
        missing = missing_requirements(kind)
        state = "yes" if not missing else "no"
        detail = kind_info(kind).description + (f" (missing: {', '.join(missing)})" if missing else "")
        lines.append(f"{kind:<22} {state:<10} {detail}")
    if config_path is not None or _default_exists():
        from ensembles.checkpoint import read_member_spec
        from screen.site_config import load_site_config

        site = load_site_config(config_path)
        lines.append("")
        lines.append(f"site config {site.source}: operating point {site.operating_point or '(none)'}")
        for member in site.members:
            spec = read_member_spec(member.checkpoint)
            lines.append(f"  {member.name:<12} {member.kind:<22} {spec.image_size}px {spec.resize:<9} "
                         f"threshold {spec.threshold:.3f}  {spec.intended_use:<8}  {member.checkpoint}")
    return lines


def _default_exists() -> bool:
    from screen.site_config import DEFAULT_CONFIG

    return DEFAULT_CONFIG.is_file()


def check_lines(directory: Path, kind: str | None = None) -> list[str]:
    """``screen models check``: one line per check; raises when any failed.

    Raises:
        MemberUnavailableError: the checks need packages missing here (named).
        CheckpointError: a check failed (every failed check named).
    """
    from ensembles.checkpoint import read_member_spec
    from ensembles.errors import CheckpointError, MemberUnavailableError
    from ensembles.registry import missing_requirements

    try:
        spec_kind = kind or read_member_spec(directory).kind
    except CheckpointError:
        spec_kind = None
    if spec_kind is not None:
        missing = missing_requirements(spec_kind)
        if missing:
            raise MemberUnavailableError(
                f"checking a {spec_kind} checkpoint needs {', '.join(missing)}, missing here "
                f"(pip install {' '.join(missing)})"
            )
    from ensembles.member_check import check_member

    report = check_member(directory, kind)
    lines = report.lines()
    if not report.ok:
        for line in lines:
            click.echo(line)
        report.raise_for_problems()
    return lines + [f"{directory}: every check passed ({report.kind})"]


@click.group("models", invoke_without_command=True)
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also list this site config's members (default: sample_data/site.toml if present).")
@click.pass_context
def models_cmd(ctx: click.Context, config_path: Path | None) -> None:
    """List member kinds, whether each can run here, and the site config's checkpoints.

    Subcommands import a stock checkpoint as a member, and check one.
    """
    if ctx.invoked_subcommand is None:
        for line in models_report(config_path):
            click.echo(line)


def _labels(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    labels = tuple(part.strip() for part in value.split(",") if part.strip())
    if not labels:
        raise click.BadParameter("give one or more comma-separated names", param_hint="--labels")
    return labels


@models_cmd.command("import")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--kind", required=True,
              type=click.Choice([k.value for k in MemberKind if k is not MemberKind.REFINER]),
              help="The member kind the model becomes.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="New folder for the member checkpoint (must not exist, or be empty).")
@click.option("--intended-use", required=True, type=click.Choice(list(INTENDED_USES)),
              help="What this site declares the model fit for (written to member.json; "
                   "demo and research results say so in every output).")
@click.option("--name", help="Display name in outputs (default: the --out folder's name).")
@click.option("--prompt", help="The prompt the PaliGemma model was fine-tuned with "
                               "(default: the paper's, per kind).")
@click.option("--image-size", type=click.IntRange(min=1),
              help="Input side: must match a PaliGemma's SigLIP; DETR's letterbox square.")
@click.option("--labels", help="Comma-separated answers (classifier: positive,negative), box "
                               "label (detector) or DETR class names.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="The member's own decision threshold until an operating point is tuned.")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A PEFT LoRA adapter folder to put on SOURCE (SOURCE becomes OUT/base).")
def import_cmd(source: Path, kind: str, out_dir: Path, intended_use: str, name: str | None,
               prompt: str | None, image_size: int | None, labels: str | None, threshold: float,
               adapter: Path | None) -> None:
    """Turn a stock save_pretrained folder SOURCE (model + processor) into a member checkpoint.

    Copies configs, safetensors and tokenizer files (never pickles), writes member.json, runs
    every check of `screen models check`, and only then creates OUT.
    """
    from ensembles.member_import import ImportOptions, import_member

    options = ImportOptions(kind=kind, intended_use=intended_use, name=name, prompt=prompt,
                            image_size=image_size, labels=_labels(labels), threshold=threshold,
                            adapter=adapter)
    result = import_member(source, out_dir, options)
    for line in result.report.lines():
        click.echo(line)
    if result.left_behind:
        click.echo(f"left behind (not needed, or pickles that are never loaded): "
                   f"{', '.join(Path(p).name for p in result.left_behind)}")
    click.echo(f"imported {source} as {kind} {result.spec.name!r} ({intended_use}) into {out_dir}")


@models_cmd.command("check")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice([k.value for k in MemberKind]),
              help="The kind it must be (default: what its member.json says).")
def check_cmd(directory: Path, kind: str | None) -> None:
    """Check a member checkpoint against what the code relies on (as loading does).

    Exit 2 naming each failed check.
    """
    for line in check_lines(directory, kind):
        click.echo(line)
