"""The summary of `make results`: one section per experiment, the headline table, the units
tasks share, and the generated parts of docs/RESULTS.md."""
from __future__ import annotations

import re
import statistics
from pathlib import Path

from subnet.report import load_runs, write_report
from subnet.report.plots import plot_kept_heatmap
from subnet.report.runs import kept_pct, slug, task_of
from subnet.report.stats import (extraction_settings, lower_is_better, overlap_tables, pm, refit_pairs,
                                 refit_vs_random, versus_baselines, within_probe,
                                 within_probe_setting, wins, baseline_comparison)


def experiment_section(exp, runs: list[dict]) -> str:
    """The headline numbers of one experiment for summary.md (figure paths relative to it):
    probes, the within-1-point sizes, one row per extraction setting (metric, FLOPs, latency,
    file size; means over seeds), and extraction against each baseline, paired by seed."""
    metric = runs[0]["metric"]
    probes = [m for m in runs if m["method"] == "probe"]
    long = [m["compact"] for m in runs if m["method"] == "probe-4x"]
    out = [f"### {exp.name}: {exp.title}", "",
           f"Backbone {exp.backbone}; data `{exp.recipe}`; {len(runs)} runs. Report: [{exp.name}/report.md]"
           f"({exp.name}/report.md). {_worker_time(runs)}", "",
           f"![{exp.name}: metric against kept parameters]({exp.name}/metric_vs_kept.png)",
           f"![{exp.name}: kept units per layer]({exp.name}/kept_units_{slug(task_of(runs[0]))}.png)", ""]
    if probes:
        out.append(f"- probe (test): {metric} {pm([m['compact'] for m in probes])} ({len(probes)} seeds)"
                   + (f"; with 4x the steps (seed 0): {long[0]:.4f}" if long else ""))
    out += [f"- {line}" for line in (within_probe(runs, probe=p, method=w) for w in ("extract", "refit")
                                     for p in ("probe", "probe-4x")) if line]
    rows = []
    for t, ms in extraction_settings(runs).items():
        value = f"{pm([m['compact'] for m in ms])} ({len(ms)} seeds)"
        if ms[0].get("extra"):
            name = next(iter(ms[0]["extra"]))
            value += f"; {name}: {statistics.mean(m['extra'][name]['value'] for m in ms if 'extra' in m):.2f}"
        timed = [m["latency_batch1"] for m in ms if m.get("latency_batch1")]
        latency = (f"{statistics.mean(1e3 * x['compact']['median_s'] for x in timed):.2f} | "
                   f"{statistics.mean(x['full']['median_s'] / x['compact']['median_s'] for x in timed):.2f}x"
                   if timed else "- | -")
        rows.append(f"| {t} | {statistics.mean(kept_pct(m) for m in ms):.1f}% | {value} | "
                    f"{statistics.mean(m['flops_per_clip']['compact'] for m in ms) / 1e9:.3f} | {latency} | "
                    f"{statistics.mean(m['file_bytes'] for m in ms) / 1e6:.1f} |")
    if rows:
        out += ["", "| t | kept params | extraction | GFLOPs / clip | latency b1 (ms) | speedup | file (MB) |",
                "|---|---|---|---|---|---|---|"] + rows
    if probes:
        p = probes[0]
        out += ["", f"Full encoder: {p['params']['full']:,} parameters, {p['flops_per_clip']['full'] / 1e9:.3f} "
                f"GFLOPs per clip, {p['file_bytes'] / 1e6:.1f} MB."]
    for block in (versus_baselines(runs), refit_vs_random(runs)):
        if block:
            out += ["", block]
    return "\n".join(out) + "\n"


def cross_task_sections(runs_by_exp: dict, reports: Path, t: float) -> list[str]:
    """For every backbone that two or more experiments share (`runs_by_exp`: Experiment -> its
    runs, as `load_runs` reads them): which units each task keeps, as summary.md sections (figure
    paths relative to it): a heat map of each experiment's lowest-seed extraction at target `t`,
    side by side (REPORTS/cross-task/), and how much two tasks' kept units overlap against chance
    (`report.overlap_tables`, over every seed)."""
    picked: dict[str, dict[str, list[dict]]] = {}  # backbone -> experiment -> its extractions at t
    for exp, runs in runs_by_exp.items():
        ext = sorted((m for m in runs if m["method"] == "extract" and m.get("t") == t and m.get("keep")),
                     key=lambda m: m.get("seed") or 0)
        if ext:
            picked.setdefault(exp.backbone, {})[exp.name] = ext
    sections = []
    for backbone, by_exp in picked.items():
        if len(by_exp) < 2:
            continue
        figure = f"cross-task/kept_units_{slug(backbone)}.png"
        (reports / "cross-task").mkdir(parents=True, exist_ok=True)
        firsts = [{**ms[0], "label": f"{name} (seed {ms[0].get('seed') or 0})"} for name, ms in by_exp.items()]
        plot_kept_heatmap(firsts, reports / figure, f"{backbone}, one extraction per task at t={t:g}")
        out = [f"### Kept units across tasks ({backbone}, t={t:g})", "",
               f"![kept units across tasks, {backbone}]({figure})", ""] + overlap_tables(by_exp)
        sections.append("\n".join(out))
    return sections


def _worker_time(runs: list[dict]) -> str:
    """The training time of an experiment's runs (sum of their wall times), per method."""
    per: dict[str, float] = {}
    for m in runs:
        per[m["method"]] = per.get(m["method"], 0.0) + m.get("train_seconds", 0.0)
    if not any(per.values()):
        return ""
    parts = ", ".join(f"{k} {v / 60:.1f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
    return (f"Training: {sum(per.values()) / 60:.0f} worker-minutes (the runs' wall times summed; two runs "
            f"share the 2 cores), {parts}.")


def write_reports(experiments, root: Path, reports: Path, protocol) -> str:
    """REPORTS/<experiment>/ (report.md + figures) for every experiment with runs, and
    REPORTS/summary.md (the headline table, then one section per experiment); returns it."""
    rows, sections, runs_by_exp = [], [], {}
    for exp in experiments:
        if not (root / exp.name).is_dir():
            continue
        write_report([root / exp.name], reports / exp.name, title=f"{exp.name}: {exp.title} ({exp.backbone})")
        runs = runs_by_exp[exp] = load_runs([root / exp.name])
        rows.append(summary_row(exp.name, runs))
        sections.append(experiment_section(exp, runs))
    sections += cross_task_sections(runs_by_exp, reports, statistics.median_low(protocol.targets))
    lines = ["# subnet results: summary", "",
             f"Protocol (every run): {protocol.steps} steps, batch {protocol.batch_size}, lr head "
             f"{protocol.lr_head:g}, lr gates {protocol.lr_gates:g}, lambda {protocol.lam:g}, warm-up "
             f"{protocol.warmup:g}, validation every {protocol.eval_every} steps; extraction with --freeze-dead "
             f"{protocol.freeze_dead} --settle {protocol.settle:g}; targets "
             f"{', '.join(f'{t:g}' for t in protocol.targets)}; seeds {', '.join(map(str, protocol.seeds))}.", "",
             "Largest removed parameter fraction within 1 point of a probe, for the extraction and for refit "
             "(the extraction's units with a new head trained like random's): \"extraction / refit\".", "",
             "| experiment | probe | within 1 point of it | probe, 4x steps (seed 0) | within 1 point of it | "
             "extraction beats (wins / sizes) | with `--refit` beats (wins / sizes) |",
             "|---|---|---|---|---|---|---|"] + rows + [""] + sections
    text = "\n".join(lines)
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "summary.md").write_text(text)
    return text


def update_results_doc(doc: Path, summary: str) -> bool:
    """Replace the generated parts of `doc` (docs/RESULTS.md) by those of `summary`: the headline
    table between <!-- table --> and <!-- /table -->, the per-experiment sections between
    <!-- sections --> and <!-- /sections --> (figure paths made relative to the doc). False
    when the doc or its markers are missing (nothing written)."""
    if not doc.is_file():
        return False
    text = doc.read_text()
    if not all(m in text for m in ("<!-- table -->", "<!-- /table -->", "<!-- sections -->", "<!-- /sections -->")):
        return False
    split = summary.find("\n### ")
    head, sections = (summary, "") if split < 0 else (summary[:split], summary[split + 1:])
    table = "\n".join(line for line in head.splitlines() if line.startswith("|"))
    sections = re.sub(r"\]\(([^)/]+)/", r"](results/\1/", sections).rstrip()
    text = re.sub(r"<!-- table -->.*?<!-- /table -->", lambda _: f"<!-- table -->\n{table}\n<!-- /table -->", text,
                  flags=re.S)
    text = re.sub(r"<!-- sections -->.*?<!-- /sections -->",
                  lambda _: f"<!-- sections -->\n{sections}\n<!-- /sections -->", text, flags=re.S)
    doc.write_text(text)
    return True


def summary_row(name: str, runs) -> str:
    """One row of the results summary: probe, the within-1-point pruning, and for each baseline
    at how many sizes extraction's mean beats the baseline's mean."""
    probes = [m["compact"] for m in runs if m["method"] == "probe"]
    long_probes = [m["compact"] for m in runs if m["method"] == "probe-4x"]

    def removed_within(probe: str, method: str) -> str:
        found = within_probe_setting(runs, probe=probe, method=method)
        if found and found[2]:
            return f"{100 - statistics.mean(kept_pct(m) for m in found[2]):.1f}% (t={found[1]})"
        return "none" if found else "-"

    def both(probe: str) -> str:  # extraction / refit
        return f"{removed_within(probe, 'extract')} / {removed_within(probe, 'refit')}"
    low = lower_is_better(runs[0]["metric"]) if runs else False
    # the extraction's own units (refit) are not a baseline of it: they get their own column
    beats = wins({k: ps for k, ps in baseline_comparison(runs).items() if k[0] != "refit"}, low)
    metric = runs[0]["metric"] if runs else ""
    return (f"| {name} | {metric} {pm(probes) if probes else '-'} | {both('probe')} | "
            f"{pm(long_probes) if long_probes else '-'} | {both('probe-4x')} | {beats or '-'} | "
            f"{wins(refit_pairs(runs), low) or '-'} |")

