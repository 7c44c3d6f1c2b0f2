"""``screen models``: which member kinds can run on this machine, and what the site config loads."""

from __future__ import annotations

from pathlib import Path

import click


def models_report(config_path: Path | None) -> list[str]:
    """Lines for ``screen models``: every registered kind and, with a config, its members."""
    from ensembles.registry import member_kind, list_members, missing_requirements

    lines = [f"{'kind':<22} {'runs here':<10} description"]
    for kind in list_members():
        missing = missing_requirements(kind)
        state = "yes" if not missing else "no"
        detail = member_kind(kind).description + (f" (missing: {', '.join(missing)})" if missing else "")
        lines.append(f"{kind:<22} {state:<10} {detail}")
    if config_path is not None or _default_exists():
        from ensembles.checkpoint import read_member_spec
        from screen.config import load_site_config

        site = load_site_config(config_path)
        lines.append("")
        lines.append(f"site config {site.source}: operating point {site.operating_point}")
        for member in site.members:
            spec = read_member_spec(member.checkpoint)
            lines.append(f"  {member.name:<12} {member.kind:<22} {spec.image_size}px {spec.resize:<9} "
                         f"threshold {spec.threshold:.3f}  {member.checkpoint}")
    return lines


def _default_exists() -> bool:
    from screen.config import DEFAULT_CONFIG

    return DEFAULT_CONFIG.is_file()


@click.command("models")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also check this site config's members (default: sample_data/site.toml if present).")
def models_cmd(config_path: Path | None) -> None:
    """List member kinds, whether each can run here, and the site config's checkpoints."""
    for line in models_report(config_path):
        click.echo(line)
