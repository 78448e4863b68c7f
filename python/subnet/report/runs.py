"""Reading runs: every metrics.json (+ subnet.json) under some folders, as dicts with their
method, setting, label and kept units; grouping and naming helpers the report shares."""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path


METHOD_ORDER = ("probe", "probe-4x", "extract", "refit", "importance", "random", "scratch")


def base_method(method: str) -> str:
    return "scratch" if method.startswith("scratch") else method  # scratch-4x: a longer budget


def method_order(method: str) -> tuple:
    b = base_method(method)
    return (METHOD_ORDER.index(b) if b in METHOD_ORDER else 99, method)


KIND_ORDER = ("conv", "dwconv", "head", "ffn")


KIND_NAME = {"conv": "conv channels", "dwconv": "conformer conv channels", "head": "attention heads",
             "ffn": "FFN neurons"}


def load_runs(paths) -> list[dict]:
    """Every run under `paths` (a run directory holds metrics.json; other directories are
    searched), as its metrics + "run" (directory), "method", "label" and "keep" (per group:
    kind, size and kept indices from subnet.json, when the run saved an artifact)."""
    dirs = []
    for p in map(Path, paths):
        found = [p] if (p / "metrics.json").is_file() else sorted(f.parent for f in p.rglob("metrics.json"))
        if not found:
            raise FileNotFoundError(f"{p}: no metrics.json in or under it")
        dirs += [d for d in found if d not in dirs]
    runs = []
    for d in dirs:
        m = json.loads((d / "metrics.json").read_text())
        m.setdefault("method", "extract")  # a plain `subnet extract` run
        m["run"] = str(d)
        cfg = d / "subnet.json"
        m["keep"] = json.loads(cfg.read_text())["groups"] if cfg.is_file() else None
        m["label"] = run_label(m, d)
        runs.append(m)
    seen: dict[tuple, int] = {}
    for m in runs:
        seen[task_of(m), m["label"]] = seen.get((task_of(m), m["label"]), 0) + 1
    for m in runs:  # within a task, a label names one run
        if seen[task_of(m), m["label"]] > 1:
            m["label"] = f"{m['label']} [{Path(m['run']).parent.name}]"
    runs.sort(key=lambda m: (task_of(m), method_order(m["method"]), -m["params"]["kept_fraction"], m["label"]))
    return runs


def run_label(m: dict, d: Path) -> str:
    if m["method"] == "extract" and "t" in m:
        return f"extract t={m['t']:g}" + (f" s{m['seed']}" if m.get("seed") else "")
    return d.name if m["method"] in d.name else f"{m['method']} ({d.name})"


def task_of(m: dict) -> str:
    """A short name of the evaluation set: what "task" means in the figures."""
    parts = Path(str(m.get("eval_set", "?"))).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else (parts[0] if parts else "?")


def by_task(runs) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for m in runs:
        out.setdefault(task_of(m), []).append(m)
    return out


def resolved(path) -> str:
    return str(Path(path).resolve())


def setting_of(m: dict, runs) -> object:
    """What groups a run with its other seeds: an extraction's target t; a baseline's reference
    extraction's t (each seed of a baseline references the extraction of that seed); else the
    reference or the run itself."""
    if "t" in m:
        return m["t"]
    ref = m.get("reference")
    if ref:
        ext = next((e for e in runs if e["method"] == "extract" and resolved(e["run"]) == resolved(ref)), None)
        return ext["t"] if ext and "t" in ext else ref
    return "probe" if m["method"] == "probe" else m["run"]


def method_of(label, runs):
    return next((m["method"] for m in runs if m["label"] == label), "")


def slug(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", task).strip("-") or "task"


def heatmap_runs(runs) -> list[dict]:
    """The runs worth a heat-map column: every extraction of the lowest seed, and the first seed
    of the random and importance baselines of the middle extraction (scratch keeps its
    reference's units, the probe keeps everything; more columns would not fit a page)."""
    seeds = [m.get("seed") or 0 for m in runs if m["method"] == "extract"]
    first = min(seeds) if seeds else 0
    mid = middle_extraction([m for m in runs if (m.get("seed") or 0) == first])
    ref = resolved(mid["run"]) if mid else None
    out, seen = [], set()
    for m in sorted(runs, key=lambda m: m.get("seed") or 0):
        if m["method"] == "extract" and (m.get("seed") or 0) == first:
            out.append(m)
        elif (m["method"] in ("random", "importance") and m["method"] not in seen and m.get("reference")
              and resolved(m["reference"]) == ref):
            out.append(m)
            seen.add(m["method"])
    return sorted(out, key=runs.index)


def middle_extraction(runs):
    """The extraction with the task's median kept fraction (the lower one of an even count)."""
    ext = [m for m in runs if m["method"] == "extract" and m.get("keep")]
    if not ext:
        return None
    mid = statistics.median_low(m["params"]["kept_fraction"] for m in ext)
    return next(m for m in ext if m["params"]["kept_fraction"] == mid)


def extra_names(runs) -> list[str]:
    names = []
    for m in runs:
        names += [n for n in (m.get("extra") or {}) if n not in names]
    return names


def kept_pct(m) -> float:
    return 100 * m["params"]["kept_fraction"]


def latency_ms(m, which="compact"):
    lat = m.get("latency_batch1")
    return 1e3 * lat[which]["median_s"] if lat else None


def relative_latency(m) -> float | None:
    """Compact latency as % of the full encoder's, both timed interleaved in the same run: a
    busy machine slows both alike, so this ratio moves far less than milliseconds across runs."""
    lat = m.get("latency_batch1")
    return 100 * lat["compact"]["median_s"] / lat["full"]["median_s"] if lat else None


def layer_label(group: str) -> str:
    """'layers.3.self_attn.heads' -> 'L3'; a group without a layer number keeps its last part."""
    nums = re.findall(r"\.(\d+)\.", f".{group}.")
    return f"L{nums[-1]}" if nums else group.split(".")[-1]
