"""A whole extraction run, paper-style vs subnet: wall time to the trained gates + head, and
the compact model's test metric.

    .venv/bin/python benchmarks/whole_run.py --data results/data/kws-tts/manifest.jsonl [--steps 300]

The same backbone (whisper-tiny.en), data, seed, steps, loss and optimiser for every variant
(the protocol of `make results`); only the implementation differs:
  - paper-style: every gate multiplied in by a forward hook, eager attention, all units computed;
  - subnet: fused gated activation, SDPA + head gate;
  - subnet --freeze-dead K: units dead for K consecutive steps are frozen and no longer computed.
Whole runs cannot be interleaved call by call, so the variants run in turn, then again in the
reverse order; the table gives each variant's mean time over its two runs. Nothing else may
run on the machine meanwhile. Writes benchmarks/results/whole-run-<device>-<date>.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "python"), str(ROOT), str(ROOT / "benchmarks")]

from paper_style import paper_style  # noqa: E402
from subnet import load_backbone  # noqa: E402
from subnet.experiments import EXPERIMENTS, Protocol  # noqa: E402
from subnet.extraction import finish, prepare_backbone, setup_run  # noqa: E402
from subnet.train import Extractor, run_loop  # noqa: E402


class PaperStyleExtractor(Extractor):
    def _attach(self, backbone):
        return paper_style(backbone, self.cfg.kinds)


def one_run(variant: str, data: str, cfg, max_seconds: float, out: Path) -> dict:
    manifest = Path(data)
    bb = prepare_backbone(load_backbone("whisper-tiny.en"), max_seconds)
    trainer = PaperStyleExtractor if variant == "paper-style" else Extractor
    run = setup_run(bb, f"{manifest}@train", f"{manifest}@valid", f"{manifest}@test", cfg, out, max_seconds,
                    progress=False, trainer=trainer)
    t0 = time.perf_counter()
    run_loop(run.ex, run.steps, run.valid, run.log, progress=False)
    seconds = time.perf_counter() - t0
    m = finish(run, out, measure_latency=False)
    return {"variant": variant, "train_seconds": seconds, "metric": m["metric"], "compact": m["compact"],
            "kept_params": m["params"]["kept_fraction"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the kws-tts manifest (subnet data build kws-tts ...)")
    ap.add_argument("--steps", type=int, default=Protocol.steps)
    ap.add_argument("-t", type=float, default=0.45)
    ap.add_argument("--freeze-dead", type=int, default=10)
    ap.add_argument("--out", help="where the runs go (default: a new temporary folder)")
    args = ap.parse_args(argv)
    args.out = args.out or tempfile.mkdtemp(prefix="subnet-whole-run-")
    exp = next(e for e in EXPERIMENTS if e.recipe == "kws-tts")
    cfg = replace(Protocol(steps=args.steps).config(exp, seed=0, t=args.t), checkpoint_every=10 ** 9)
    variants = {"paper-style": cfg, "subnet": cfg, f"subnet --freeze-dead {args.freeze_dead}":
                replace(cfg, freeze_dead=args.freeze_dead)}
    runs = []
    for order in (list(variants), list(reversed(variants))):
        for name in order:
            r = one_run(name, args.data, variants[name], exp.max_seconds, Path(args.out) / name.replace(" ", "_"))
            runs.append(r)
            print(r, flush=True)
    rows = []
    paper = statistics.mean(r["train_seconds"] for r in runs if r["variant"] == "paper-style")
    for name in variants:
        rs = [r for r in runs if r["variant"] == name]
        secs = statistics.mean(r["train_seconds"] for r in rs)
        rows.append({"variant": name, "train_seconds": secs, "speedup_over_paper": paper / secs,
                     "metric": rs[0]["metric"], "compact": [r["compact"] for r in rs],
                     "kept_params": rs[0]["kept_params"]})
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__}
    out = ROOT / "benchmarks" / "results" / f"whole-run-cpu-{datetime.date.today().isoformat()}.json"
    out.write_text(json.dumps({"machine": machine, "steps": args.steps, "t": args.t, "rows": rows, "runs": runs},
                              indent=1))
    print(render_whole_run(rows, args.steps))
    print(f"wrote {out}")
    return 0


def render_whole_run(rows, steps) -> str:
    lines = [f"| variant ({steps} steps) | training time | speedup over paper-style | test metric | kept params |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['train_seconds']:.0f} s | {r['speedup_over_paper']:.2f}x | "
                     f"{r['metric']} {', '.join(f'{v:.4f}' for v in r['compact'])} | {100 * r['kept_params']:.1f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
