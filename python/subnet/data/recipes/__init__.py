"""Dataset recipes: reproducible datasets built from installed Debian audio packages.

    from subnet.data.recipes import build_recipe, RECIPES
    manifest = build_recipe("kws-tts", "data/kws", seed=0, size="small")

Each recipe writes WAV files, ``manifest.jsonl`` (path, target, split, source, licence) and
``recipe.json``; it installs nothing and names the ``apt-get install`` command when a package
is missing. One module per recipe; importing this package registers them all.
"""
from __future__ import annotations

from . import asr_tts, digits_real, instruments, instruments_unlabeled, kws_tts, pitch, prompts_real, tagging  # noqa: F401  (registers)
from .registry import RECIPES, SIZES, Recipe, build_recipe, register
from .tools import ToolMissing

__all__ = ["build_recipe", "RECIPES", "SIZES", "Recipe", "register", "ToolMissing"]
