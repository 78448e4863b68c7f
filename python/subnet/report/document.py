"""report.md: the tables and figures of `subnet report`, for any runs of extractions and baselines."""
from __future__ import annotations

import json
from pathlib import Path

from .plots import DODGE, plot_costs, plot_kept_heatmap, plot_metric_vs_kept, plot_pareto
from .runs import by_task, extra_names, heatmap_runs, kept_pct, latency_ms, load_runs, middle_extraction, slug, task_of
from .stats import overlap_tables, refit_vs_random, versus_baselines, within_probe


def runs_table(runs) -> str:
    extra = extra_names(runs)
    rows = ["| run | method | seed | " + runs[0]["metric"] + "".join(f" | {n}" for n in extra) +
            " | kept params | GFLOPs / clip | latency (ms) | speedup | file (MB) |",
            "|---|---|---|---|" + "---|" * len(extra) + "---|---|---|---|---|"]
    for m in runs:
        lat = m.get("latency_batch1")
        ms = f"{latency_ms(m):.2f}" if lat else "-"
        speed = f"{lat['full']['median_s'] / lat['compact']['median_s']:.2f}x" if lat else "-"
        cells = "".join(f" | {m['extra'][n]['value']:.4f}" if n in (m.get("extra") or {}) else " | -" for n in extra)
        rows.append(f"| {m['label']} | {m['method']} | {m.get('seed', '-')} | {m['compact']:.4f}{cells} | "
                    f"{kept_pct(m):.1f}% | {m['flops_per_clip']['compact'] / 1e9:.3f} | {ms} | {speed} | "
                    f"{m['file_bytes'] / 1e6:.2f} |")
    return "\n".join(rows)


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
        name = slug(task)
        lines += [f"## {task}", "", runs_table(ms), ""]
        within = [within_probe(ms, probe=p, method=w) for w in ("extract", "refit") for p in ("probe", "probe-4x")]
        for extra in ("\n".join(f"- {x}" for x in within if x), versus_baselines(ms), refit_vs_random(ms)):
            if extra:
                lines += [extra, ""]
        ext = [m for m in ms if m["method"] == "extract"]
        if ext:
            drawn[f"pareto_{name}.png"] = plot_pareto(ext, out / f"pareto_{name}.png")
            lines += [f"![Pareto front, {task}](pareto_{name}.png)", ""]
        heat = plot_kept_heatmap(heatmap_runs(ms), out / f"kept_units_{name}.png", task)
        if heat:
            drawn[f"kept_units_{name}.png"] = heat
            lines += [f"![kept units, {task}](kept_units_{name}.png)", ""]
    tasks = by_task(runs)
    if len(tasks) > 1:  # the same backbone, several tasks: one extraction of each, side by side
        picks = [{**m, "label": f"{task_of(m)}: {m['label']}"}
                 for m in (middle_extraction(ms) for ms in tasks.values()) if m]
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
