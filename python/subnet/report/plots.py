"""Report figures (matplotlib, Agg): metric against kept parameters per method, Pareto fronts,
kept units per layer as heat maps, latency and file-size bars. Each returns the series it drew,
so tests can check them."""
from __future__ import annotations

import statistics

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .runs import KIND_NAME, KIND_ORDER, base_method, by_task, kept_pct, latency_ms, method_of, method_order, relative_latency, task_of
from .stats import aggregate, kept_matrices, lower_is_better, pareto_front


STYLE = {"probe": ("black", "*"), "probe-4x": ("dimgray", "*"), "extract": ("tab:blue", "o"),
         "refit": ("tab:green", "^"), "importance": ("tab:orange", "s"), "random": ("tab:gray", "v"),
         "scratch": ("tab:red", "D")}


def method_style(method: str) -> tuple:
    color, marker = STYLE.get(base_method(method), ("tab:purple", "x"))
    return ("tab:brown", "P") if method != base_method(method) else (color, marker)


DODGE = 1.5  # x offset (percentage points) between methods, so equal sizes do not hide each other


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
        pts = [(kept_pct(m) if key == "params" else relative_latency(m), m["compact"], m) for m in runs]
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
            full = statistics.median(latency_ms(m, "full") for m in runs if m.get("latency_batch1"))
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


def plot_metric_vs_kept(runs, path) -> dict:
    """One panel per task: metric against kept parameters (%), one series per method (mean over
    seeds, bars = std; methods drawn DODGE points apart); the probe as a dashed line.
    Returns {task: {method: [(x, y, std, n)]}}."""
    tasks = by_task(runs)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False, constrained_layout=True)
    series = {}
    for ax, (task, ms) in zip(axes[0], tasks.items()):
        agg = aggregate(ms)
        series[task] = agg
        metric = ms[0]["metric"]
        methods = sorted(agg, key=method_order)
        for i, method in enumerate(methods):
            pts = agg[method]
            color, marker = method_style(method)
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
                ax.set_title(f"{m['label']}\n{m['metric']} {m['compact']:.3f}, {kept_pct(m):.0f}% params",
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
        colors = ["black" if k == "full encoder" else method_style(method_of(k, runs))[0]
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
