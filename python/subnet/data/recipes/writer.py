"""Writing a recipe's output: 16-bit WAV files, ``manifest.jsonl`` and ``recipe.json``.

Every manifest row has ``path``, the target (``label`` | ``labels`` | ``text``), ``split``,
``source`` (what produced the audio) and ``licence``. Rows are sorted by path so the manifest
is byte-identical for a seed. ``recipe.json`` records the recipe, seed, size, counts and
anything the recipe left out (with why), so a build is never silently partial.
"""
from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..audio import resample

MARKER = "recipe.json"


def tidy(samples: np.ndarray, rate: int, sample_rate: int = 16000, margin: float = 0.05,
         threshold: float = 0.02) -> np.ndarray | None:
    """Resample to ``sample_rate``, trim leading/trailing silence (below ``threshold`` of the
    peak, keeping ``margin`` seconds) and normalise the peak to 0.9. None for silence."""
    x = resample(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), rate, sample_rate).numpy()
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak < 1e-3:
        return None
    loud = np.flatnonzero(np.abs(x) >= threshold * peak)
    pad = round(margin * sample_rate)
    x = x[max(0, loud[0] - pad):loud[-1] + pad + 1]
    return (x * (0.9 / peak)).astype(np.float32)


class DatasetWriter:
    """Collects clips into ``out_dir``; :meth:`close` writes the manifest last."""

    def __init__(self, out_dir, recipe: str, seed: int, size: str, overwrite: bool = False):
        out = Path(out_dir)
        if out.exists() and any(out.iterdir()):
            if not (out / MARKER).is_file():
                raise FileExistsError(f"{out} exists and is not a recipe output; choose an empty or new folder")
            if not overwrite:
                raise FileExistsError(f"{out} already holds a built dataset; pass overwrite=True (--force) "
                                      "to rebuild it")
            shutil.rmtree(out)  # only ever a folder this writer made (it holds recipe.json)
        out.mkdir(parents=True, exist_ok=True)
        # the marker goes first: an interrupted build is still recognised (and --force replaces it)
        (out / MARKER).write_text(json.dumps({"recipe": recipe, "seed": seed, "size": size, "status": "building"}) + "\n")
        self.out, self.recipe, self.seed, self.size = out, recipe, seed, size
        self.rows: list[dict] = []
        self.left_out: Counter = Counter()
        self.left_out_examples: dict[str, list[str]] = {}
        self.notes: list[str] = []
        self._t0 = time.perf_counter()

    def _row(self, rel: str, split: str, source: str, licence: str, target: dict, fields: dict) -> None:
        self.rows.append({"path": rel, **target, "split": split, "source": source, "licence": licence, **fields})

    def add(self, rel: str, samples: np.ndarray, sample_rate: int, *, split: str, source: str, licence: str,
            label: str | None = None, labels=None, text: str | None = None, **fields) -> None:
        """Write ``samples`` (float, mono) as 16-bit PCM to ``out_dir/rel`` and record its row."""
        import soundfile as sf

        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16")
        self._row(rel, split, source, licence, _target(label, labels, text), fields)

    def copy(self, rel: str, src: Path, *, split: str, source: str, licence: str, label: str | None = None,
             labels=None, text: str | None = None, **fields) -> None:
        """Copy an existing audio file byte for byte (real recordings stay untouched)."""
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, path)
        self._row(rel, split, source, licence, _target(label, labels, text), fields)

    def leave_out(self, reason: str, what: str) -> None:
        """Record something the recipe did not write (e.g. a note a soundfont renders silent)."""
        self.left_out[reason] += 1
        self.left_out_examples.setdefault(reason, [])
        if len(self.left_out_examples[reason]) < 5:
            self.left_out_examples[reason].append(what)

    def abandon(self) -> None:
        """After a failed build: remove the folder if nothing was written, else mark it failed."""
        if not self.rows:
            shutil.rmtree(self.out, ignore_errors=True)
        else:
            (self.out / MARKER).write_text(json.dumps({"recipe": self.recipe, "status": "failed"}) + "\n")

    def close(self, **info) -> Path:
        """Write ``manifest.jsonl`` and ``recipe.json``; returns the manifest's path."""
        if not self.rows:
            raise RuntimeError(f"recipe {self.recipe} produced no clips (left out: {dict(self.left_out)})")
        rows = sorted(self.rows, key=lambda r: r["path"])
        manifest = self.out / "manifest.jsonl"
        manifest.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n" for r in rows))
        splits = Counter(r["split"] for r in rows)
        classes = Counter(lab for r in rows for lab in ([r["label"]] if "label" in r else r.get("labels", [])))
        meta = {"recipe": self.recipe, "status": "done", "seed": self.seed, "size": self.size, "clips": len(rows),
                "splits": dict(sorted(splits.items())), "classes": dict(sorted(classes.items())),
                "left_out": {k: {"count": v, "examples": self.left_out_examples[k]} for k, v in sorted(self.left_out.items())},
                "notes": self.notes, **info}
        # build time is not part of the deterministic output: recipe.json is metadata, not data
        meta["build_seconds"] = round(time.perf_counter() - self._t0, 1)
        (self.out / MARKER).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
        return manifest


def _target(label, labels, text) -> dict:
    given = {k: v for k, v in (("label", label), ("labels", labels), ("text", text)) if v is not None}
    if len(given) != 1:
        raise ValueError(f"a clip needs exactly one of label | labels | text, got {sorted(given)}")
    if "labels" in given:
        given["labels"] = sorted(given["labels"])
    return given
