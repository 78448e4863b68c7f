"""The effect of `--align N` on a finished extraction: the same best gates, kept counts rounded
to multiples of N (best logits first), then test metric, parameters and CPU latency.

    .venv/bin/python benchmarks/align_effect.py results/1-kws/extract/t=0.45-s0 [--align 1 8 16 32]

Reads the run's config.json and best.pt, rebuilds its data and model (the data paths in the
run's metrics.json/config must still exist), and for every N compacts the aligned decision,
evaluates it on the run's test set and times batch 1 and 8 against the unaligned compact model
(interleaved, medians). Nothing else may run meanwhile. Writes <run>/align_effect.json and prints
a markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "python"), str(ROOT)]

from subnet import load_backbone  # noqa: E402
from subnet.training.baselines import reference_config  # noqa: E402
from subnet.measure.timing import interleaved_latency  # noqa: E402
from subnet.core.compact import aligned_keep, compact  # noqa: E402
from subnet.training.extract import eval_batches, prepare_backbone, setup_run  # noqa: E402
from subnet.training.pipeline import Pipeline  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="an extraction's output directory (config.json, best.pt, metrics.json)")
    ap.add_argument("--align", type=int, nargs="+", default=[1, 8, 16, 32])
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args(argv)
    run_dir = Path(args.run)
    m = json.loads((run_dir / "metrics.json").read_text())
    cfg = reference_config(run_dir)
    front = json.loads((run_dir / "subnet.json").read_text())["extra"]["front_end"]
    seconds = front["n_samples"] / 16000  # the clip length the run was made with (Whisper front end)
    manifest = m["train_set"].rsplit("@", 1)[0]
    bb = prepare_backbone(load_backbone(m["backbone"]), seconds)
    run = setup_run(bb, f"{manifest}@train", f"{manifest}@valid", f"{manifest}@test", cfg, Path(tempfile.mkdtemp(prefix="align-effect-")),
                    seconds, progress=False)
    ex = run.ex
    ex.restore(torch.load(run_dir / "best.pt", weights_only=True))
    base_keep = ex.masked.keep()
    batches = list(eval_batches(run.test_ds, cfg.batch_size, cfg.task, run.chars))
    fe = ex.front_end
    n = int(seconds * fe.sample_rate)
    rows, models = [], {}
    for a in args.align:
        ex.masked.set_keep(aligned_keep(ex.masked, a) if a > 1 else base_keep)
        small = compact(ex.masked)
        metric = ex.evaluate(batches, Pipeline(small, fe, ex.head, cfg.task, ex.labels))
        models[a] = small
        rows.append({"align": a, "metric": metric["metric"], "value": metric["value"],
                     "params": sum(p.numel() for p in small.parameters())})
        ex.masked.set_keep(base_keep)
    for batch in (1, 8):
        inputs = fe.inputs(torch.randn(batch, n), torch.full((batch,), n))
        lat = interleaved_latency({a: models[a] for a in args.align}, inputs, repeats=args.repeats)
        for r in rows:
            r[f"ms_batch{batch}"] = 1e3 * lat[r["align"]]["median_s"]
            r[f"vs_unaligned_batch{batch}"] = lat[args.align[0]]["median_s"] / lat[r["align"]]["median_s"]
    (run_dir / "align_effect.json").write_text(json.dumps({"run": str(run_dir), "threads": torch.get_num_threads(),
                                                          "repeats": args.repeats, "rows": rows}, indent=1))
    print(render(rows, run_dir))
    return 0


def render(rows, run_dir) -> str:
    lines = [f"`--align N` on {run_dir} (the same best gates; latency interleaved, medians):", "",
             "| N | test metric | parameters | batch 1 | speedup | batch 8 | speedup |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['align']} | {r['metric']} {r['value']:.4f} | {r['params']:,} | {r['ms_batch1']:.2f} ms | "
                     f"{r['vs_unaligned_batch1']:.2f}x | {r['ms_batch8']:.1f} ms | {r['vs_unaligned_batch8']:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
