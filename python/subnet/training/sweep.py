"""`subnet sweep`: one extraction per sparsity target, then a table and a Pareto plot.

Each setting runs `subnet.extract` into OUT/t=<t>/ (a finished setting, one with a
metrics.json, is not rerun), then OUT/sweep.md (table) and OUT/sweep.png (task metric
against kept parameters and against measured latency relative to the full encoder's,
Pareto front marked) are written.
"""
from __future__ import annotations

from dataclasses import replace
import json
from pathlib import Path

from .loop import ExtractConfig

def run_name(t: float) -> str:
    return f"t={t:g}"


def sweep(backbone, train, valid, test, ts, cfg: ExtractConfig | None = None, out="sweep-out",
          max_seconds: float | None = 2.0, progress: bool = True, measure_latency: bool = True,
          rerun: bool = False, refit: bool = False, extra_tests: dict | None = None) -> list[dict]:
    """Extract once per target in `ts` into out/t=<t>/; return the metrics (with "t", "method",
    "run") in the order of `ts`, and write out/sweep.md and out/sweep.png. Unless `rerun`, a
    finished setting is read back and an unfinished one resumes from its checkpoint. `refit`:
    each extraction is followed by a head refit into out/t=<t>/refit (its metrics under "refit").
    `extra_tests`: {name: data} of more test sets, reported under "extra" (as `extract`)."""
    cfg = cfg or ExtractConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.kd and not cfg.teacher:  # one probe for every setting (the teacher does not depend on t)
        from .extract import train_teacher
        cfg = replace(cfg, teacher=str(train_teacher(backbone, train, valid, cfg, out / "teacher", max_seconds,
                                                     progress=progress)))
    results = []
    for t in ts:
        run = out / run_name(t)
        if progress and (rerun or not (run / "metrics.json").is_file()):
            print(f"sweep: t={t:g} -> {run}")
        m = extract_setting(backbone, train, valid, test, replace(cfg, t=t), run, max_seconds, progress,
                            measure_latency, rerun, extra_tests)
        m["run"] = str(run)
        if refit:
            from .baselines import refit_extraction
            r = refit_extraction(backbone, run, train, valid, test, None, max_seconds, progress, measure_latency,
                                 rerun)
            m["refit"] = {"compact": r["compact"], "valid_at_best": r["valid_at_best"], "run": str(run / "refit")}
        results.append(m)
    (out / "sweep.md").write_text(sweep_table(results))
    from ..report.plots import plot_pareto
    plot_pareto(results, out / "sweep.png")
    return results


def extract_setting(backbone, train, valid, test, cfg: ExtractConfig, run, max_seconds: float | None = 2.0,
                    progress: bool = True, measure_latency: bool = True, rerun: bool = False,
                    extra_tests: dict | None = None) -> dict:
    """One sweep setting: `extract` into `run` with the sweep's fields (method, t, backbone,
    train set, seed, steps) added to its metrics.json. A finished run (metrics.json present) is
    read back unless `rerun`; an unfinished one resumes from its checkpoint."""
    from .extract import extract
    run = Path(run)
    done = run / "metrics.json"
    if done.is_file() and not rerun:  # a long sweep killed half-way restarts where it stopped
        return json.loads(done.read_text())
    m = extract(backbone, train, valid, test, cfg, run, max_seconds=max_seconds, progress=progress,
                measure_latency=measure_latency, resume=not rerun, extra_tests=extra_tests)
    m.update(method="extract", t=cfg.t, backbone=str(backbone), train_set=str(train), seed=cfg.seed,
             steps=cfg.steps)
    done.write_text(json.dumps(m, indent=1))
    return m


def sweep_table(results: list[dict]) -> str:
    """Markdown table: one row per setting; * marks the Pareto front (metric vs kept parameters)."""
    from ..report.stats import pareto_front
    front = pareto_front([(m["params"]["kept_fraction"], m["compact"]) for m in results],
                         lower_is_better=results[0]["metric"] == "cer" if results else False)
    refits = any("refit" in m for m in results)
    rows = ["| t | " + (results[0]["metric"] if results else "metric") + (" | with --refit" if refits else "") +
            " | kept params | GFLOPs / clip | latency (ms, batch 1) | speedup | file (MB) | Pareto |",
            "|---|---|---|---|---|---|---|---|" + ("---|" if refits else "")]
    for i, m in enumerate(results):
        lat = m.get("latency_batch1")
        ms = f"{1e3 * lat['compact']['median_s']:.2f}" if lat else "-"
        speed = f"{lat['full']['median_s'] / lat['compact']['median_s']:.2f}x" if lat else "-"
        refit = (f" | {m['refit']['compact']:.4f}" if "refit" in m else " | -") if refits else ""
        rows.append(f"| {m.get('t', '-'):g} | {m['compact']:.4f}{refit} | {100 * m['params']['kept_fraction']:.1f}% | "
                    f"{m['flops_per_clip']['compact'] / 1e9:.3f} | {ms} | {speed} | "
                    f"{m['file_bytes'] / 1e6:.2f} | {'*' if i in front else ''} |")
    return "\n".join(rows) + "\n"
