"""The recipe registry: name -> builder, and :func:`build_recipe`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .writer import DatasetWriter

SIZES = ("tiny", "small", "full")


@dataclass(frozen=True)
class Recipe:
    """A dataset recipe: ``build(writer, seed, size, progress)`` fills the writer and returns
    extra metadata for recipe.json. ``packages`` are the Debian packages it reads."""

    name: str
    summary: str
    build: Callable
    packages: tuple[str, ...]
    sizes: dict = field(default_factory=dict)  # size -> one-line description


RECIPES: dict[str, Recipe] = {}


def register(name: str, summary: str, packages, sizes: dict):
    """Decorator: register ``fn(writer, seed, size, progress) -> dict`` as recipe ``name``."""
    def wrap(fn):
        RECIPES[name] = Recipe(name, summary, fn, tuple(packages), dict(sizes))
        return fn
    return wrap


def build_recipe(name: str, out_dir, seed: int = 0, size: str = "small", overwrite: bool = False,
                 progress: bool = True) -> Path:
    """Build recipe ``name`` into ``out_dir`` (deterministic for ``seed`` and ``size``).

    Returns the path of the written ``manifest.jsonl``. Raises ToolMissing (with the
    ``apt-get install`` command) when a Debian package the recipe reads is absent.
    """
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; available: {', '.join(sorted(RECIPES))}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")
    recipe = RECIPES[name]
    writer = DatasetWriter(out_dir, name, seed, size, overwrite=overwrite)
    try:
        info = recipe.build(writer, seed, size, progress) or {}
    except BaseException:
        writer.abandon()
        raise
    return writer.close(**info)
