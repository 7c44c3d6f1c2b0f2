"""Do a checkpoint's weights fit the model its config describes? Headers against a meta model.

The model is built on the ``meta`` device (no memory), and each safetensors key is renamed the
way ``from_pretrained`` renames it (transformers 5 reads older layouts, e.g. PaliGemma's
``language_model.model.*`` of transformers 4, through its checkpoint conversion mapping). The
renaming uses transformers' own functions (``get_model_conversion_mapping`` and
``rename_source_key``), not a copy of their rules; they are internal API, so a transformers
without them makes this check say "skipped" rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from ensembles.member_check.files import TensorInfo


@dataclass
class WeightFit:
    """How a checkpoint's tensors line up with the model.

    Attributes:
        missing: model parameters no tensor provides (tied copies and ``optional`` excluded).
        unexpected: tensors the model has no parameter for.
        mismatched: ``"name: checkpoint (a, b) vs model (c, d)"`` for shape disagreements.
        skipped: why the comparison could not be made (empty when it was).
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    skipped: str = ""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        parts = []
        for label, names in (("shape differs", self.mismatched), ("missing", self.missing),
                             ("unexpected", self.unexpected)):
            if names:
                more = f" and {len(names) - 3} more" if len(names) > 3 else ""
                parts.append(f"{label}: {', '.join(names[:3])}{more}")
        return "; ".join(parts)


def _renamer(model: Any) -> Any:
    """``key -> model key`` as ``from_pretrained`` maps checkpoint keys, or ``None``."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import (
            WeightConverter,
            WeightRenaming,
            rename_source_key,
        )
    except ImportError:
        return None
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    meta_state = model.state_dict()

    def rename(key: str) -> str:
        return str(rename_source_key(key, renamings, converters, model.base_model_prefix,
                                     meta_state)[0])

    return rename


def weight_fit(model: Any, headers: dict[str, TensorInfo],
               optional_prefixes: Iterable[str] = ()) -> WeightFit:
    """Compare checkpoint ``headers`` with ``model`` (built on the meta device).

    Args:
        model: a transformers model built from the checkpoint's config.
        headers: :func:`ensembles.member_check.files.tensor_headers` of its weights.
        optional_prefixes: model parameters that may be absent (a task head the loader
            initialises itself).
    """
    rename = _renamer(model)
    if rename is None:
        return WeightFit(skipped="this transformers has no checkpoint conversion mapping to "
                                 "rename keys with")
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    tied: dict[str, str] = dict(getattr(model, "all_tied_weights_keys", None) or {})
    fit = WeightFit()
    seen: set[str] = set()
    for key, info in sorted(headers.items()):
        name = rename(key)
        if name not in expected:
            fit.unexpected.append(key)
            continue
        seen.add(name)
        if expected[name] != info.shape:
            fit.mismatched.append(f"{name}: checkpoint {info.shape} vs model {expected[name]}")
    optional = tuple(optional_prefixes)
    for name in sorted(set(expected) - seen):
        if tied.get(name) in seen or (optional and name.startswith(optional)):
            continue
        fit.missing.append(name)
    return fit
