"""`subnet report`: report.md + PNG figures from the metrics.json of extractions and baselines.

Figures (matplotlib, Agg): task metric against kept parameters per method; the kept units
per layer of every artifact, side by side, one heat map per task; latency and file-size
bars. Each plotting function returns the series it drew, so tests can check them.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

METHOD_ORDER = ("probe", "probe-4x", "extract", "refit", "importance", "random", "scratch")
STYLE = {"probe": ("black", "*"), "probe-4x": ("dimgray", "*"), "extract": ("tab:blue", "o"),
         "refit": ("tab:green", "^"), "importance": ("tab:orange", "s"), "random": ("tab:gray", "v"),
         "scratch": ("tab:red", "D")}


def _base_method(method: str) -> str:
    return "scratch" if method.startswith("scratch") else method  # scratch-4x: a longer budget


def _order(method: str) -> tuple:
    b = _base_method(method)
    return (METHOD_ORDER.index(b) if b in METHOD_ORDER else 99, method)


def _style(method: str) -> tuple:
    color, marker = STYLE.get(_base_method(method), ("tab:purple", "x"))
    return ("tab:brown", "P") if method != _base_method(method) else (color, marker)


KIND_ORDER = ("conv", "dwconv", "head", "ffn")
KIND_NAME = {"conv": "conv channels", "dwconv": "conformer conv channels", "head": "attention heads",
             "ffn": "FFN neurons"}


# --- reading runs -------------------------------------------------------------------------
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
    runs.sort(key=lambda m: (task_of(m), _order(m["method"]), -m["params"]["kept_fraction"], m["label"]))
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


def lower_is_better(metric: str) -> bool:
    return metric == "cer"


def pareto_front(points, lower_is_better: bool = False) -> set[int]:
    """Indices of the (cost, value) points no other point beats: cost <= and value at least as
    good, one of them strictly."""
    def better_eq(a, b):
        return a <= b if lower_is_better else a >= b
    front = set()
    for i, (c, v) in enumerate(points):
        if not any((cj <= c and better_eq(vj, v) and (cj < c or vj != v))
                   for j, (cj, vj) in enumerate(points) if j != i):
            front.add(i)
    return front


def _latency_ms(m, which="compact"):
    lat = m.get("latency_batch1")
    return 1e3 * lat[which]["median_s"] if lat else None


def _kept_pct(m) -> float:
    return 100 * m["params"]["kept_fraction"]


# --- figures ----------------------------------------------------------------------------------
def _relative_latency(m) -> float | None:
    """Compact latency as % of the full encoder's, both timed interleaved in the same run: a
    busy machine slows both alike, so this ratio moves far less than milliseconds across runs."""
    lat = m.get("latency_batch1")
    return 100 * lat["compact"]["median_s"] / lat["full"]["median_s"] if lat else None


def plot_pareto(runs, path) -> dict:
    """Sweep figure: metric against kept parameters (%) and against batch-1 latency (% of the
    full encoder's, same run); the Pareto front drawn as a line, its points filled. Returns
    {"params"|"latency": {"points", "front"}} with (x, metric) pairs."""
    metric = runs[0]["metric"] if runs else "metric"
    low = lower_is_better(metric)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    series = {}
    for ax, key, xlabel in ((axes[0], "params", "kept encoder parameters (%)"),
                            (axes[1], "latency", "latency, batch 1, median (% of the full encoder's)")):
        pts = [(_kept_pct(m) if key == "params" else _relative_latency(m), m["compact"], m) for m in runs]
        pts = [p for p in pts if p[0] is not None]
        if not pts:
            ax.text(0.5, 0.5, "latency not measured", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            series[key] = {"points": [], "front": []}
            continue
        front = sorted(pareto_front([(x, y) for x, y, _ in pts], low))
        fx = sorted((pts[i][0], pts[i][1]) for i in front)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], facecolors="none", edgecolors="tab:blue",
                   s=45, label="settings", zorder=3)
        ax.plot([p[0] for p in fx], [p[1] for p in fx], "-o", color="tab:blue", ms=6, label="Pareto front", zorder=4)
        if key == "latency":
            full = statistics.median(_latency_ms(m, "full") for m in runs if m.get("latency_batch1"))
            ax.axvline(100, color="black", ls=":", lw=1, label=f"full encoder (median {full:.1f} ms)")
        xs = [p[0] for p in pts] + ([100] if key == "latency" else [])
        right = min(xs) + 0.75 * (max(xs) - min(xs))
        for x, y, m in pts:
            if "t" in m:  # labels of the rightmost points go on their left, inside the axes
                inside = x > right and max(xs) > min(xs)
                ax.annotate(f"t={m['t']:g}", (x, y), xytext=(-5 if inside else 5, 4), textcoords="offset points",
                            fontsize=8, ha="right" if inside else "left")
        ax.set_xlabel(xlabel)
        ax.margins(x=0.08, y=0.12)
        ax.set_ylabel(f"{metric} (test)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        series[key] = {"points": [(x, y) for x, y, _ in pts], "front": fx}
    fig.suptitle(f"{metric} against size and speed ({'lower' if low else 'higher'} is better)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return series


def _resolved(path) -> str:
    return str(Path(path).resolve())


def setting_of(m: dict, runs) -> object:
    """What groups a run with its other seeds: an extraction's target t; a baseline's reference
    extraction's t (each seed of a baseline references the extraction of that seed); else the
    reference or the run itself."""
    if "t" in m:
        return m["t"]
    ref = m.get("reference")
    if ref:
        ext = next((e for e in runs if e["method"] == "extract" and _resolved(e["run"]) == _resolved(ref)), None)
        return ext["t"] if ext and "t" in ext else ref
    return "probe" if m["method"] == "probe" else m["run"]


def _aggregate(runs):
    """Group seeds of one setting: (method, setting) -> mean kept %, mean/std metric, n."""
    groups: dict[tuple, list[dict]] = {}
    for m in runs:
        groups.setdefault((m["method"], str(setting_of(m, runs))), []).append(m)
    out: dict[str, list[tuple]] = {}
    for (method, _), ms in groups.items():
        ys = [m["compact"] for m in ms]
        out.setdefault(method, []).append((statistics.mean(_kept_pct(m) for m in ms), statistics.mean(ys),
                                           statistics.stdev(ys) if len(ys) > 1 else 0.0, len(ys)))
    return {k: sorted(v) for k, v in out.items()}


DODGE = 1.5  # x offset (percentage points) between methods, so equal sizes do not hide each other


def plot_metric_vs_kept(runs, path) -> dict:
    """One panel per task: metric against kept parameters (%), one series per method (mean over
    seeds, bars = std; methods drawn DODGE points apart); the probe as a dashed line.
    Returns {task: {method: [(x, y, std, n)]}}."""
    tasks = by_task(runs)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False, constrained_layout=True)
    series = {}
    for ax, (task, ms) in zip(axes[0], tasks.items()):
        agg = _aggregate(ms)
        series[task] = agg
        metric = ms[0]["metric"]
        methods = sorted(agg, key=_order)
        for i, method in enumerate(methods):
            pts = agg[method]
            color, marker = _style(method)
            probe = method.startswith("probe")  # the full encoder: a horizontal line
            dodge = 0.0 if probe else DODGE * (i - (len(methods) - 1) / 2)
            if probe:
                y = statistics.mean(p[1] for p in pts)
                name = "probe (full)" if method == "probe" else "probe, 4x steps"
                ax.axhline(y, color=color, ls="--" if method == "probe" else ":", lw=1, label=f"{name} {y:.3f}")
            ax.errorbar([p[0] + dodge for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], color=color,
                        marker=marker, ls="none" if probe else "-", capsize=3, ms=6,
                        mfc=color if probe or method == "extract" else "white", mew=1.5,
                        label=None if probe else method)
        ax.set_xlabel("kept encoder parameters (%)")
        ax.set_ylabel(f"{metric} (test, {'lower' if lower_is_better(metric) else 'higher'} is better)")
        ax.set_xlim(0, 105)
        ax.set_title(task, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return series


def layer_label(group: str) -> str:
    """'layers.3.self_attn.heads' -> 'L3'; a group without a layer number keeps its last part."""
    nums = re.findall(r"\.(\d+)\.", f".{group}.")
    return f"L{nums[-1]}" if nums else group.split(".")[-1]


def kept_matrices(keep: dict) -> dict[str, tuple[list[str], np.ndarray]]:
    """Per unit kind: (row labels, layers x units matrix: 1 kept, 0 removed, NaN no such unit)."""
    out = {}
    for kind in KIND_ORDER:
        names = [n for n, g in keep.items() if g["kind"] == kind]
        if not names:
            continue
        mat = np.full((len(names), max(keep[n]["size"] for n in names)), np.nan)
        for r, n in enumerate(names):
            mat[r, :keep[n]["size"]] = 0
            mat[r, keep[n]["keep"]] = 1
        out[kind] = ([layer_label(n) for n in names], mat)
    return out


def kept_overlap(a: dict, b: dict, kinds=None) -> tuple[float, float]:
    """How alike two artifacts' kept units are (`keep` dicts of one backbone's groups): the
    Jaccard index of their kept units (those of the groups whose kind is in `kinds`, default all,
    pooled: shared / kept by either), and what chance gives it had each artifact kept its own
    number of units in every group at random (expected shared / expected kept by either). Two
    artifacts that keep none of those units are alike: (1, 1)."""
    if set(a) != set(b):
        raise ValueError(f"kept units of different groups cannot be compared: {sorted(set(a) ^ set(b))}")
    shared = either = chance_shared = total = 0.0
    for name, ga in a.items():
        if kinds is not None and ga["kind"] not in kinds:
            continue
        ka, kb = set(ga["keep"]), set(b[name]["keep"])
        shared += len(ka & kb)
        either += len(ka | kb)
        chance_shared += len(ka) * len(kb) / ga["size"]
        total += len(ka) + len(kb)
    if either == 0:
        return 1.0, 1.0
    return shared / either, chance_shared / (total - chance_shared)


def overlap_tables(runs_by_name: dict[str, list[dict]]) -> list[str]:
    """Markdown lines: how much the kept units of every two of `runs_by_name` (name -> artifacts
    of one backbone, e.g. one task's seeds at one target) overlap against chance
    (`kept_overlap`): the mean over every pair of their artifacts, one name's own artifacts
    against each other on the diagonal; over all gated units, then over attention heads (when
    the backbone has any). Upper triangle only: the index is symmetric."""
    import itertools
    names = list(runs_by_name)
    sizes: dict[str, int] = {}  # units per kind
    for g in runs_by_name[names[0]][0]["keep"].values():
        sizes[g["kind"]] = sizes.get(g["kind"], 0) + g["size"]
    counts = ", ".join(f"{sizes[k]} {KIND_NAME[k]}" for k in KIND_ORDER if k in sizes)
    lines = ["How alike are the units two tasks keep? The Jaccard index of their kept units (kept by both / kept "
             "by either), mean over every pair of seeds (on the diagonal: one task's seeds against each other), "
             "and in parentheses the index that units drawn at random with the same number kept in every layer "
             "would give.", ""]
    tables = [(None, f"All gated units ({counts})")] + ([(("head",), "Attention heads")] if "head" in sizes else [])
    for kinds, what in tables:
        rows = [f"| | {' | '.join(names)} |", "|---" * (len(names) + 1) + "|"]
        for i, a in enumerate(names):
            cells = []
            for b in names[i:]:
                pairs = [kept_overlap(x["keep"], y["keep"], kinds)  # a name against itself: its other artifacts
                         for x, y in itertools.product(runs_by_name[a], runs_by_name[b]) if x is not y]
                cells.append(f"{statistics.mean(p[0] for p in pairs):.2f} ({statistics.mean(p[1] for p in pairs):.2f})"
                             if pairs else "-")
            rows.append(f"| {a} | {' | '.join([''] * i + cells)} |")
        lines += [f"{what}:", ""] + rows + [""]
    return lines


def plot_kept_heatmap(runs, path, title: str = "") -> dict:
    """Runs side by side (columns), one row per unit kind: which units of every layer each
    artifact keeps. Returns {run label: {kind: matrix}}."""
    runs = [m for m in runs if m.get("keep") and not m["method"].startswith("probe")]
    if not runs:
        return {}
    mats = {m["label"]: kept_matrices(m["keep"]) for m in runs}
    kinds = [k for k in KIND_ORDER if any(k in v for v in mats.values())]
    rows = {k: max(len(v[k][0]) for v in mats.values() if k in v) for k in kinds}
    size = (max(5.0, 2.6 * len(runs) + 1), 0.35 * sum(rows.values()) + 1.2 * len(kinds) + 0.6)
    fig, axes = plt.subplots(len(kinds), len(runs), figsize=size,
                             squeeze=False, gridspec_kw={"height_ratios": [rows[k] + 1 for k in kinds]},
                             constrained_layout=True)
    cmap = ListedColormap(["#e6e6e6", "#1f4e9c"]).with_extremes(bad="white")
    for c, m in enumerate(runs):
        for r, kind in enumerate(kinds):
            ax = axes[r][c]
            if kind not in mats[m["label"]]:
                ax.set_axis_off()
                continue
            labels, mat = mats[m["label"]][kind]
            ax.imshow(np.ma.masked_invalid(mat), aspect="auto", interpolation="nearest", cmap=cmap, vmin=0, vmax=1)
            share = np.nansum(mat, axis=1) / np.sum(~np.isnan(mat), axis=1)  # kept share of each layer
            ax.set_yticks(range(len(labels)), [f"{lab} {100 * f:.0f}%" for lab, f in zip(labels, share)], fontsize=7)
            ax.tick_params(axis="x", labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))  # unit indices
            kept = np.nansum(mat) / np.sum(~np.isnan(mat))
            ax.set_xlabel(f"{KIND_NAME[kind]}: {100 * kept:.0f}% kept", fontsize=8)
            if r == 0:
                ax.set_title(f"{m['label']}\n{m['metric']} {m['compact']:.3f}, {_kept_pct(m):.0f}% params",
                             fontsize=8)
    fig.suptitle((title + ": " if title else "") + "kept units per layer (blue kept, grey removed; % kept per layer)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return mats


def plot_costs(runs, path) -> dict:
    """Horizontal bars per run: batch-1 latency (median, p10-p90 whiskers, ms) and file size
    (MB, not repeated for baselines, which have their reference's architecture); the full
    encoder drawn first. Returns {"latency_ms": {label: v}, "file_mb": {...}}."""
    lat, err, size = {}, {}, {}
    if len(by_task(runs)) > 1:  # one figure for every task: say which task each bar is
        runs = [{**m, "label": f"{task_of(m)}: {m['label']}"} for m in runs]
    timed = [m for m in runs if m.get("latency_batch1")]
    if timed:
        full = timed[0]["latency_batch1"]["full"]
        lat["full encoder"] = 1e3 * full["median_s"]
        err["full encoder"] = (1e3 * (full["median_s"] - full["p10_s"]), 1e3 * (full["p90_s"] - full["median_s"]))
    probes = [m for m in runs if m["method"] == "probe"]
    if probes:
        size["full encoder"] = probes[0]["file_bytes"] / 1e6
    for m in runs:
        if m["method"].startswith("probe"):
            continue
        if m.get("latency_batch1"):
            c = m["latency_batch1"]["compact"]
            lat[m["label"]] = 1e3 * c["median_s"]
            err[m["label"]] = (1e3 * (c["median_s"] - c["p10_s"]), 1e3 * (c["p90_s"] - c["median_s"]))
        if not m.get("reference"):  # a baseline has its reference's architecture, hence its file size
            size[m["label"]] = m["file_bytes"] / 1e6
    n = max(len(lat), len(size), 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.38 * n + 1.6), constrained_layout=True)
    for ax, data, unit, name in ((axes[0], lat, "ms", "latency, batch 1 (median, p10-p90)"),
                                 (axes[1], size, "MB", "model file size")):
        if not data:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        labels = list(data)
        colors = ["black" if k == "full encoder" else _style(_method_of(k, runs))[0]
                  for k in labels]
        xerr = np.array([err.get(k, (0, 0)) for k in labels]).T if data is lat else None
        ax.barh(range(len(labels)), [data[k] for k in labels], xerr=xerr, color=colors, alpha=0.85, capsize=2)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        ends = [data[k] + (err.get(k, (0, 0))[1] if data is lat else 0) for k in labels]
        for i, k in enumerate(labels):  # the value just right of the bar (and of its whisker)
            ax.text(ends[i], i, f" {data[k]:.2f}", va="center", fontsize=7)
        ax.set_xlim(0, 1.18 * max(ends))
        ax.set_xlabel(f"{name} ({unit})")
        ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"latency_ms": lat, "file_mb": size}


def _method_of(label, runs):
    return next((m["method"] for m in runs if m["label"] == label), "")


# --- report.md ------------------------------------------------------------------------------------
def _slug(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", task).strip("-") or "task"


def heatmap_runs(runs) -> list[dict]:
    """The runs worth a heat-map column: every extraction of the lowest seed, and the first seed
    of the random and importance baselines of the middle extraction (scratch keeps its
    reference's units, the probe keeps everything; more columns would not fit a page)."""
    seeds = [m.get("seed") or 0 for m in runs if m["method"] == "extract"]
    first = min(seeds) if seeds else 0
    mid = _middle_extraction([m for m in runs if (m.get("seed") or 0) == first])
    ref = _resolved(mid["run"]) if mid else None
    out, seen = [], set()
    for m in sorted(runs, key=lambda m: m.get("seed") or 0):
        if m["method"] == "extract" and (m.get("seed") or 0) == first:
            out.append(m)
        elif (m["method"] in ("random", "importance") and m["method"] not in seen and m.get("reference")
              and _resolved(m["reference"]) == ref):
            out.append(m)
            seen.add(m["method"])
    return sorted(out, key=runs.index)


def _middle_extraction(runs):
    """The extraction with the task's median kept fraction (the lower one of an even count)."""
    ext = [m for m in runs if m["method"] == "extract" and m.get("keep")]
    if not ext:
        return None
    mid = statistics.median_low(m["params"]["kept_fraction"] for m in ext)
    return next(m for m in ext if m["params"]["kept_fraction"] == mid)


def _extra_names(runs) -> list[str]:
    names = []
    for m in runs:
        names += [n for n in (m.get("extra") or {}) if n not in names]
    return names


def runs_table(runs) -> str:
    extra = _extra_names(runs)
    rows = ["| run | method | seed | " + runs[0]["metric"] + "".join(f" | {n}" for n in extra) +
            " | kept params | GFLOPs / clip | latency (ms) | speedup | file (MB) |",
            "|---|---|---|---|" + "---|" * len(extra) + "---|---|---|---|---|"]
    for m in runs:
        lat = m.get("latency_batch1")
        ms = f"{_latency_ms(m):.2f}" if lat else "-"
        speed = f"{lat['full']['median_s'] / lat['compact']['median_s']:.2f}x" if lat else "-"
        cells = "".join(f" | {m['extra'][n]['value']:.4f}" if n in (m.get("extra") or {}) else " | -" for n in extra)
        rows.append(f"| {m['label']} | {m['method']} | {m.get('seed', '-')} | {m['compact']:.4f}{cells} | "
                    f"{_kept_pct(m):.1f}% | {m['flops_per_clip']['compact'] / 1e9:.3f} | {ms} | {speed} | "
                    f"{m['file_bytes'] / 1e6:.2f} |")
    return "\n".join(rows)


def _mean_std(ys) -> tuple[float, float]:
    return statistics.mean(ys), statistics.stdev(ys) if len(ys) > 1 else 0.0


def _pm(ys) -> str:
    mean, std = _mean_std(ys)
    return f"{mean:.4f} +- {std:.4f}"


def extraction_settings(runs, method: str = "extract") -> dict:
    """Extractions (or the runs of `method`, grouped by their reference's t) grouped by target t
    (their seeds): {t: [runs]}, most kept first."""
    groups: dict = {}
    for m in runs:
        if m["method"] == method:
            groups.setdefault(setting_of(m, runs), []).append(m)
    return dict(sorted(groups.items(), key=lambda kv: -statistics.mean(_kept_pct(m) for m in kv[1])))


def within_probe_setting(runs, points: float = 1.0, probe: str = "probe", method: str = "extract"):
    """(probe mean, the extraction setting with the most parameters removed whose mean metric
    over seeds is within `points` (absolute: % for accuracy/mAP, CER points) of the mean probe,
    its runs) or None when there is no probe or no extraction. `probe`: the method whose runs are
    the reference ("probe", or "probe-4x": the probe trained 4x longer); `method`: whose settings
    are candidates ("extract", or "refit": the extraction's units with a new head)."""
    probes = [m["compact"] for m in runs if m["method"] == probe]
    settings = extraction_settings(runs, method)
    if not probes or not settings:
        return None
    ref, low, tol = statistics.mean(probes), lower_is_better(runs[0]["metric"]), points / 100
    ok = [(t, ms) for t, ms in settings.items()
          if (statistics.mean(m["compact"] for m in ms) <= ref + tol if low
              else statistics.mean(m["compact"] for m in ms) >= ref - tol)]
    if not ok:
        return ref, None, None
    t, ms = min(ok, key=lambda kv: statistics.mean(_kept_pct(m) for m in kv[1]))
    return ref, t, ms


def within_probe(runs, points: float = 1.0, probe: str = "probe", method: str = "extract") -> str | None:
    """The sentence for report.md: the largest removed-parameter fraction (mean over the seeds of
    one setting) whose mean metric is within `points` of the mean probe."""
    found = within_probe_setting(runs, points, probe, method)
    if found is None:
        return None
    ref, t, ms = found
    name = "the probe" if probe == "probe" else "the probe trained with 4x the steps"
    what = "extraction" if method == "extract" else "refit (the extraction's units, a new head)"
    if ms is None:
        return f"no {what} setting is within {points:g} point of {name} ({ref:.4f}, mean over seeds)"
    removed = 100 - statistics.mean(_kept_pct(m) for m in ms)
    return (f"{what}: largest removed-parameter fraction within {points:g} point of {name} ({ref:.4f}, mean over "
            f"seeds): **{removed:.1f}%** (t={t}, {runs[0]['metric']} {_pm([m['compact'] for m in ms])} over "
            f"{len(ms)} seed(s))")


def baseline_comparison(runs) -> dict:
    """{(method, t): [(extraction value, baseline value)]}: each baseline run paired with the
    extraction it references (same seed, same size)."""
    ext = {_resolved(m["run"]): m for m in runs if m["method"] == "extract"}
    pairs: dict[tuple, list] = {}
    for m in runs:
        ref = m.get("reference")
        baseline = m["method"] in ("random", "importance", "refit") or m["method"].startswith("scratch")
        if baseline and ref and _resolved(ref) in ext:
            e = ext[_resolved(ref)]
            pairs.setdefault((m["method"], setting_of(e, runs)), []).append((e["compact"], m["compact"], e))
    return pairs


def versus_baselines(runs) -> str | None:
    """Extraction against each baseline at the same size: means +- std over seeds, and the
    paired margin (each baseline seed against the extraction of that seed)."""
    pairs = baseline_comparison(runs)
    if not pairs:
        return None
    low = lower_is_better(runs[0]["metric"])
    rows = ["| t | kept params | method | extraction | baseline | margin (paired) | extraction wins |",
            "|---|---|---|---|---|---|---|"]
    for (method, t), ps in sorted(pairs.items(), key=lambda kv: (_order(kv[0][0]), str(kv[0][1]))):
        margins = [(b - e) if low else (e - b) for e, b, _ in ps]
        kept = statistics.mean(_kept_pct(x[2]) for x in ps)
        wins = sum(d > 0 for d in margins)
        rows.append(f"| {t} | {kept:.1f}% | {method} | {_pm([p[0] for p in ps])} | {_pm([p[1] for p in ps])} | "
                    f"{_pm(margins)} | {wins}/{len(margins)} seeds |")
    return "\n".join(rows)


def refit_pairs(runs) -> dict:
    """{(method, t): [(refit value, baseline value)]}: the extraction's own units with a new head
    (refit, what `subnet extract --refit` produces) against every other baseline cut from the
    same extraction (random units with the same counts and the same head training, importance,
    scratch), paired by their reference."""
    by_ref: dict[str, dict[str, float]] = {}
    for m in runs:
        if m.get("reference") and m["method"] not in ("extract", "probe", "probe-4x"):
            by_ref.setdefault(_resolved(m["reference"]), {})[m["method"]] = m["compact"]
    ext = {_resolved(m["run"]): m for m in runs if m["method"] == "extract"}
    pairs: dict = {}
    for ref, v in by_ref.items():
        if "refit" in v and ref in ext:
            for method, value in v.items():
                if method != "refit":
                    pairs.setdefault((method, setting_of(ext[ref], runs)), []).append((v["refit"], value))
    return pairs


def refit_vs_random_pairs(runs) -> dict:
    """{t: [(refit value, random value)]}: the choice of units alone, head training equal."""
    return {t: ps for (method, t), ps in refit_pairs(runs).items() if method == "random"}


def refit_vs_random(runs) -> str | None:
    """The table for report.md: which units matter, with the head training equal."""
    pairs = refit_vs_random_pairs(runs)
    if not pairs:
        return None
    low = lower_is_better(runs[0]["metric"])
    rows = ["The extraction's units against random units, both with a new head trained the same way (refit vs "
            "random, paired by reference):", "",
            "| t | refit (extraction's units) | random units | margin (paired) | refit wins |", "|---|---|---|---|---|"]
    for t, ps in sorted(pairs.items(), key=lambda kv: str(kv[0])):
        margins = [(b - a) if low else (a - b) for a, b in ps]
        rows.append(f"| {t} | {_pm([a for a, _ in ps])} | {_pm([b for _, b in ps])} | {_pm(margins)} | "
                    f"{sum(d > 0 for d in margins)}/{len(margins)} seeds |")
    return "\n".join(rows)


def summary_row(name: str, runs) -> str:
    """One row of the results summary: probe, the within-1-point pruning, and for each baseline
    at how many sizes extraction's mean beats the baseline's mean."""
    probes = [m["compact"] for m in runs if m["method"] == "probe"]
    long_probes = [m["compact"] for m in runs if m["method"] == "probe-4x"]

    def removed_within(probe: str, method: str) -> str:
        found = within_probe_setting(runs, probe=probe, method=method)
        if found and found[2]:
            return f"{100 - statistics.mean(_kept_pct(m) for m in found[2]):.1f}% (t={found[1]})"
        return "none" if found else "-"

    def both(probe: str) -> str:  # extraction / refit
        return f"{removed_within(probe, 'extract')} / {removed_within(probe, 'refit')}"
    low = lower_is_better(runs[0]["metric"]) if runs else False
    # the extraction's own units (refit) are not a baseline of it: they get their own column
    beats = _wins({k: ps for k, ps in baseline_comparison(runs).items() if k[0] != "refit"}, low)
    metric = runs[0]["metric"] if runs else ""
    return (f"| {name} | {metric} {_pm(probes) if probes else '-'} | {both('probe')} | "
            f"{_pm(long_probes) if long_probes else '-'} | {both('probe-4x')} | {beats or '-'} | "
            f"{_wins(refit_pairs(runs), low) or '-'} |")


def _wins(pairs: dict, low: bool) -> str:
    """"method wins/sizes, ...": at how many sizes t the candidate's mean beats the method's,
    from {(method, t): [(candidate value, baseline value, ...)]}."""
    wins: dict[str, list[bool]] = {}
    for (method, _), ps in sorted(pairs.items(), key=lambda kv: str(kv[0])):
        margin = statistics.mean((p[1] - p[0]) if low else (p[0] - p[1]) for p in ps)
        wins.setdefault(method, []).append(margin > 0)
    return ", ".join(f"{m} {sum(w)}/{len(w)}" for m, w in sorted(wins.items(), key=lambda kv: _order(kv[0])))


def write_report(paths, out, title: str = "subnet report") -> dict:
    """Read every run under `paths`, write out/report.md and its figures; return {figure: series}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(paths)
    drawn = {"metric_vs_kept.png": plot_metric_vs_kept(runs, out / "metric_vs_kept.png"),
             "costs.png": plot_costs(runs, out / "costs.png")}
    lines = [f"# {title}", "", f"{len(runs)} runs read from {', '.join(map(str, paths))}.", "",
             "![metric against kept parameters](metric_vs_kept.png)", "",
             f"Mean over seeds, bars one standard deviation; methods at one size are drawn {DODGE:g} points "
             "apart so that none hides another.", "",
             "![latency and file size](costs.png)", ""]
    for task, ms in by_task(runs).items():
        slug = _slug(task)
        lines += [f"## {task}", "", runs_table(ms), ""]
        within = [within_probe(ms, probe=p, method=w) for w in ("extract", "refit") for p in ("probe", "probe-4x")]
        for extra in ("\n".join(f"- {x}" for x in within if x), versus_baselines(ms), refit_vs_random(ms)):
            if extra:
                lines += [extra, ""]
        ext = [m for m in ms if m["method"] == "extract"]
        if ext:
            drawn[f"pareto_{slug}.png"] = plot_pareto(ext, out / f"pareto_{slug}.png")
            lines += [f"![Pareto front, {task}](pareto_{slug}.png)", ""]
        heat = plot_kept_heatmap(heatmap_runs(ms), out / f"kept_units_{slug}.png", task)
        if heat:
            drawn[f"kept_units_{slug}.png"] = heat
            lines += [f"![kept units, {task}](kept_units_{slug}.png)", ""]
    tasks = by_task(runs)
    if len(tasks) > 1:  # the same backbone, several tasks: one extraction of each, side by side
        picks = [{**m, "label": f"{task_of(m)}: {m['label']}"}
                 for m in (_middle_extraction(ms) for ms in tasks.values()) if m]
        heat = plot_kept_heatmap(picks, out / "kept_units_by_task.png", "one extraction per task")
        if heat:
            drawn["kept_units_by_task.png"] = heat
            lines += ["## Kept units across tasks", "", "![kept units across tasks](kept_units_by_task.png)", ""]
            # every extraction of each task at the size of its pick; several backbones do not compare
            same = {task_of(m): [x for x in tasks[task_of(m)] if x["method"] == "extract" and x.get("keep")
                                 and x.get("t") == m.get("t")] for m in picks}
            if len({frozenset(ms[0]["keep"]) for ms in same.values()}) == 1:
                lines += overlap_tables(same)
    machines = {json.dumps(m.get("machine", {}), sort_keys=True) for m in runs}
    lines += ["## Machine", ""] + [f"- {m}" for m in sorted(machines)] + [""]
    (out / "report.md").write_text("\n".join(lines))
    return drawn


def _run_report(args) -> int:
    drawn = write_report(args.runs, args.out, args.title)
    print(f"report: {Path(args.out) / 'report.md'} ({len(drawn)} figures)")
    return 0


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    """`subnet report RUNS... --out DIR`: hook in with add_report_parser(sub)."""
    p = subparsers.add_parser(
        "report", help="report.md + figures from extraction, sweep and baseline runs",
        description="Read the metrics.json (and subnet.json) of every run in or under RUNS and write "
                    "DIR/report.md with per-task tables, the largest pruning within 1 point of the probe, "
                    "extraction against the baselines at equal size, and PNG figures: metric against "
                    "kept parameters per method, Pareto fronts, kept units per layer, latency and file size. "
                    "Runs of several tasks on one backbone also get one extraction of each side by side and "
                    "how much their kept units overlap (Jaccard index against chance).")
    p.add_argument("runs", nargs="+", metavar="RUNS", help="run directories or folders holding them")
    p.add_argument("--out", required=True, help="output directory for report.md and the PNGs")
    p.add_argument("--title", default="subnet report", help="report title")
    p.set_defaults(func=_run_report)
    return p
