"""A tiny registry of training recipes: ``screen train <member>`` looks its recipe up here.

Each recipe module (``train/recipes/<name>.py``) registers one function per member it trains::

    @register_recipe("detr")
    def train_detr(config: TrainConfig) -> Path: ...

The function runs the whole training described by ``config`` and returns the directory of the
best checkpoint, in the member format the screener loads directly. Recipe modules import torch
at module level, so they are imported lazily (:func:`get_recipe`), never at ``import train``.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from train.errors import RecipeError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from train.train_config import TrainConfig

__all__ = ["RECIPES", "RECIPE_MODULES", "RecipeError", "get_recipe", "recipe_names", "register_recipe"]

RecipeFn = Callable[["TrainConfig"], Path]

#: ``{member name: recipe function}``; filled by the recipe modules when they are imported.
RECIPES: dict[str, RecipeFn] = {}

#: ``screen train`` member names and the module that registers each. Listed here so the CLI can
#: show the choices without importing torch.
RECIPE_MODULES: dict[str, str] = {
    "classifier": "train.recipes.paligemma",
    "detector": "train.recipes.paligemma",
    "detr": "train.recipes.detr",
    "refiner": "train.recipes.refiner",
}


def register_recipe(name: str) -> Callable[[RecipeFn], RecipeFn]:
    """Decorator registering ``fn(config) -> checkpoint dir`` as the recipe for ``name``."""

    def decorator(fn: RecipeFn) -> RecipeFn:
        existing = RECIPES.get(name)
        if existing is not None and existing is not fn:
            raise RecipeError(f"training recipe {name!r} is registered twice")
        RECIPES[name] = fn
        return fn

    return decorator


def recipe_names() -> list[str]:
    """The member names ``screen train`` accepts, sorted (no heavy import)."""
    return sorted(set(RECIPE_MODULES) | set(RECIPES))


def get_recipe(name: str) -> RecipeFn:
    """The recipe function for ``name``, importing its module on first use.

    Raises:
        RecipeError: ``name`` is not a known recipe, or its module is not installed.
    """
    if name not in RECIPES:
        module = RECIPE_MODULES.get(name)
        if module is None:
            raise RecipeError(
                f"unknown training recipe {name!r}; valid recipes: {', '.join(recipe_names())}"
            )
        if importlib.util.find_spec(module) is None:
            raise RecipeError(f"training recipe {name!r} lives in {module}, which is missing")
        importlib.import_module(module)
    try:
        return RECIPES[name]
    except KeyError:
        raise RecipeError(
            f"module {RECIPE_MODULES.get(name)} did not register recipe {name!r}"
        ) from None
