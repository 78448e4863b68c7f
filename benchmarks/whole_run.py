"""A whole extraction run, paper-style vs subnet: training time to the trained gates + head,
and the compact model's test metric.

    .venv/bin/python benchmarks/whole_run.py --data results/data/kws-tts/manifest.jsonl [--steps 300]
        [--backbone whisper-tiny.en]

The same backbone (whisper-tiny.en, the backbone of `make results`, unless --backbone), data,
seed, steps, loss and optimiser for every variant (the protocol of `make results`); only the
implementation differs:
  - paper-style: every gate multiplied in by a forward hook, eager attention, all units computed;
  - subnet: fused gated activation, SDPA + head gate;
  - subnet --freeze-dead K: units dead for K consecutive steps are frozen and no longer computed;
  - subnet --freeze-dead K --settle F: and every gate fixed for the last F of the steps, only the
    head training then (the extraction of `make results`; this one changes the method, not only
    the implementation).
The variants' runs advance in lockstep in one process: at every step each variant reads its
batch (the same for all: same data and seed), trains on it and validates when due, in an order
that rotates from step to step; each variant's own steps are timed, so a slow spell of the
machine hits every variant alike. The process first
runs `WARMUP_STEPS` untimed steps of every variant (one-time costs: kernels, caches). Each run
is otherwise exactly `run_loop`'s (`loop_step`), so the test metrics are those of `subnet
extract`. Nothing else may run on the machine meanwhile. Writes
benchmarks/results/whole-run-cpu-<backbone>-<date>.json.
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
from experiments.runner import EXPERIMENTS, Protocol  # noqa: E402
from subnet.training.extract import finish, prepare_backbone, setup_run  # noqa: E402
from subnet.training.loop import Extractor, loop_step  # noqa: E402


WARMUP_STEPS = 20  # each variant, untimed, before the timed runs
FIRST, LAST = 50, 100  # median step time over the first / last steps (before / after units die)


class PaperStyleExtractor(Extractor):
    def _attach(self, backbone):
        return paper_style(backbone, self.cfg.kinds)


def setup(variant: str, data: str, cfg, max_seconds: float, out: Path, backbone: str = "whisper-tiny.en"):
    manifest = Path(data)
    bb = prepare_backbone(load_backbone(backbone), max_seconds)
    trainer = PaperStyleExtractor if variant == "paper-style" else Extractor
    return setup_run(bb, f"{manifest}@train", f"{manifest}@valid", f"{manifest}@test", cfg, out, max_seconds,
                     progress=False, trainer=trainer)


def setups(make, names) -> tuple[dict, dict]:
    """`make(name)` for every name, and the state of the global random generator that each
    setup left (where its run_loop would start: head dropout draws from it)."""
    runs, rng = {}, {}
    for name in names:
        runs[name] = make(name)
        rng[name] = torch.get_rng_state()
    return runs, rng


def lockstep(runs: dict, rng: dict, steps: int) -> dict[str, list[float]]:
    """Advance every run `steps` steps, one step of each in turn (rotating who goes first);
    returns each run's seconds in each of its steps (training + validation when due). Each
    run draws on its own stream of the global random generator, from its `rng` state (updated),
    so it ends exactly as it would alone."""
    seconds = {name: [] for name in runs}
    names = list(runs)
    for step in range(steps):
        for name in names[step % len(names):] + names[:step % len(names)]:
            run = runs[name]
            torch.set_rng_state(rng[name])
            t0 = time.perf_counter()  # its own batch too (run_loop reads it on a second thread)
            loop_step(run.ex, run.steps(step), run.valid, run.log)
            seconds[name].append(time.perf_counter() - t0)
            rng[name] = torch.get_rng_state()
    return seconds


def make_variants(cfg, freeze_dead: int, settle: float) -> dict:
    """The variants' configs from the protocol's extraction config: paper-style and subnet
    without its speed and settle options, then with them one at a time."""
    plain = replace(cfg, freeze_dead=0, settle=0.0)
    fast = replace(plain, freeze_dead=freeze_dead)
    return {"paper-style": plain, "subnet": plain, f"subnet --freeze-dead {freeze_dead}": fast,
            f"subnet --freeze-dead {freeze_dead} --settle {settle:g}": replace(fast, settle=settle)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the kws-tts manifest (subnet data build kws-tts ...)")
    ap.add_argument("--steps", type=int, default=Protocol.steps)
    ap.add_argument("-t", type=float, default=0.45)
    ap.add_argument("--freeze-dead", type=int, default=Protocol.freeze_dead)
    ap.add_argument("--settle", type=float, default=Protocol.settle)
    ap.add_argument("--backbone", default="whisper-tiny.en", help="a Whisper encoder name or folder "
                    "(paper-style gates Whisper encoders only)")
    ap.add_argument("--out", help="where the runs go (default: a new temporary folder)")
    args = ap.parse_args(argv)
    args.out = Path(args.out or tempfile.mkdtemp(prefix="subnet-whole-run-"))
    exp = next(e for e in EXPERIMENTS if e.recipe == "kws-tts")
    cfg = replace(Protocol(steps=args.steps).config(exp, seed=0, t=args.t), checkpoint_every=10 ** 9)
    variants = make_variants(cfg, args.freeze_dead, args.settle)
    folder = {name: name.replace(" ", "_") for name in variants}
    warm = setups(lambda n: setup(n, args.data, replace(variants[n], steps=WARMUP_STEPS, eval_every=WARMUP_STEPS),
                                  exp.max_seconds, args.out / "warm-up" / folder[n], args.backbone), variants)
    lockstep(*warm, WARMUP_STEPS)
    del warm
    runs, rng = setups(lambda n: setup(n, args.data, variants[n], exp.max_seconds, args.out / folder[n],
                                       args.backbone), variants)
    per_step = lockstep(runs, rng, args.steps)
    seconds = {name: sum(v) for name, v in per_step.items()}
    rows = []
    for name, run in runs.items():
        m = finish(run, args.out / folder[name], measure_latency=False)
        rows.append({"variant": name, "train_seconds": seconds[name],
                     "speedup_over_paper": seconds["paper-style"] / seconds[name],
                     "first_steps_ms": 1000 * statistics.median(per_step[name][:FIRST]),
                     "last_steps_ms": 1000 * statistics.median(per_step[name][-LAST:]),
                     "metric": m["metric"], "compact": m["compact"], "kept_params": m["params"]["kept_fraction"]})
        print(rows[-1], flush=True)
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__}
    tag = Path(args.backbone).name
    out = ROOT / "benchmarks" / "results" / f"whole-run-cpu-{tag}-{datetime.date.today().isoformat()}.json"
    out.write_text(json.dumps({"machine": machine, "backbone": tag, "steps": args.steps, "t": args.t,
                               "warmup_steps": WARMUP_STEPS, "timing": "lockstep", "rows": rows}, indent=1))
    print(render_whole_run(rows, args.steps))
    print(f"wrote {out}")
    return 0


def render_whole_run(rows, steps) -> str:
    lines = [f"| variant ({steps} steps) | training time | speedup over paper-style | median step: first {FIRST} / "
             f"last {LAST} | test metric | kept params |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['train_seconds']:.0f} s | {r['speedup_over_paper']:.2f}x | "
                     f"{r['first_steps_ms']:.0f} / {r['last_steps_ms']:.0f} ms | {r['metric']} {r['compact']:.4f} | "
                     f"{100 * r['kept_params']:.1f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
