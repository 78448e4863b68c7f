"""What the robustness options cost per training step: extraction, with --distill, with
--augment, with both, with prediction distillation (--kd) from a probe, with a clean-input
teacher, with distillation on clips without labels (--unlabeled).

    .venv/bin/python benchmarks/robustness_cost.py --data results/data/kws-tts/manifest.jsonl \
        --teacher results/robustness/1-kws/probe/s0 --unlabeled results/data/prompts-real/manifest.jsonl

The same backbone (whisper-tiny.en, the backbone of `make robustness`), data, seed and batch for
every variant, one thread; the variants' steps interleave in one process, in an order that
rotates from step to step, after warm-up steps of each. Two encoder states: every unit on (the
start of a run: the teacher forward costs most against the student), and 60% of the parameters'
units frozen (the end of a run at t=0.4; frozen units are not computed, the teacher still
computes them all). Timed separately: the batch (reading, decoding, augmentation; in a run it
is prepared on a background thread while the previous step runs) and the step (forward,
distillation teacher and the probe's head, backward, update). The distillation teacher is not
cached here (every batch is new, as in a run's first epoch; later epochs of an unaugmented run,
of a clean-input teacher's and of the unlabeled clips hit its per-clip cache). Nothing else may
run on the machine meanwhile. Writes
benchmarks/results/robustness-cost-cpu-<date>.json.
"""
from __future__ import annotations

import argparse
import copy
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
sys.path[:0] = [str(ROOT / "python"), str(ROOT)]  # runs from a checkout

from experiments.runner import EXPERIMENT_UNLABELED, OPTIONS, TEACHER_OPTIONS  # noqa: E402
from subnet import load_backbone  # noqa: E402
from subnet.families import family_of  # noqa: E402
from subnet.training.extract import EpochBatches, StepBatches, prepare_backbone  # noqa: E402
from subnet.training.loop import ExtractConfig, Extractor  # noqa: E402
from subnet.data.dataset import AudioDataset  # noqa: E402
from subnet.training.tasks import task_named  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="manifest with a train split (kws-tts)")
    p.add_argument("--backbone", default="whisper-tiny.en")
    p.add_argument("--steps", type=int, default=15, help="timed steps per variant and state")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--teacher", help="a probe of the backbone on 1-s clips of the same data (make robustness: "
                   "results/robustness/1-kws/probe/s0): the --kd variants' teacher; without it they are left out")
    p.add_argument("--unlabeled", help="clips without labels (make robustness: results/data/prompts-real/"
                   "manifest.jsonl): the clips of every +unlabeled variant (their cost does not depend on which clips); "
                   "without it they are left out")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    backbone = prepare_backbone(load_backbone(args.backbone), 1.0)
    fe = family_of(backbone).front_end(backbone)
    ds = AudioDataset.from_source(args.data, sample_rate=fe.sample_rate, split="train", max_seconds=1.0, train=True,
                                  progress=False, min_seconds=fe.min_samples / fe.sample_rate)
    task = task_named("classify")
    labels = task.labels(ds)
    needs_clips = [m for m, o in OPTIONS.items() if o.get("unlabeled")]
    variants = [m for m in OPTIONS if (args.teacher or m not in TEACHER_OPTIONS)
                and (args.unlabeled or m not in needs_clips)]
    if not args.teacher:
        print(f"robustness_cost: no --teacher, leaving out {', '.join(TEACHER_OPTIONS)}")
    if not args.unlabeled:
        print(f"robustness_cost: no --unlabeled, leaving out {', '.join(needs_clips)}")
    unlabeled = None
    if args.unlabeled:
        u_ds = AudioDataset.from_source(args.unlabeled, sample_rate=fe.sample_rate, max_seconds=1.0, progress=False,
                                        min_seconds=fe.min_samples / fe.sample_rate)
        unlabeled = EpochBatches(u_ds, 8)
    base = ExtractConfig(steps=10_000, batch_size=8, warmup=0.0, lam=0.0, seed=0)
    runs = {}
    scratch = tempfile.TemporaryDirectory()  # the trainers' output folder (nothing is saved there)
    for name in variants:
        cfg = ExtractConfig(**{**base.__dict__, **OPTIONS[name]})
        if name in TEACHER_OPTIONS:
            cfg = replace(cfg, teacher=args.teacher)
        if cfg.unlabeled.startswith(EXPERIMENT_UNLABELED):  # (every variant: the same --unlabeled clips)
            cfg = replace(cfg, unlabeled=args.unlabeled)
        ex = Extractor(copy.deepcopy(backbone), len(labels), cfg, Path(scratch.name), labels=labels)  # own hooks
        ex.teacher_cache = ex.unlabeled_cache = None  # every teacher forward computed (a run's first epoch)
        runs[name] = (ex, StepBatches(ds, cfg.batch_size, task, labels, augment=cfg.augment,
                                      clean_teacher=cfg.teacher_input == "clean",
                                      unlabeled=unlabeled if cfg.unlabeled else None))
    results = {}
    for state in ("all units", "about 60% removed, frozen"):
        if state != "all units":
            gen = torch.Generator().manual_seed(0)
            for ex, _ in runs.values():  # the same units frozen in every variant
                gen.manual_seed(0)
                keep = {n: torch.rand(g.size, generator=gen) < 0.4 for n, g in ex.masked.groups.items()}
                for k in keep.values():
                    k[0] = True
                ex.masked.set_keep(keep)
                ex.masked.freeze_dead()
        times = {n: {"batch": [], "step": []} for n in variants}
        for i in range(args.warmup + args.steps):
            order = variants[i % len(variants):] + variants[:i % len(variants)]
            for name in order:
                ex, batches = runs[name]
                t0 = time.perf_counter()
                batch = batches(1000 + i)
                t1 = time.perf_counter()
                ex.step(batch)
                t2 = time.perf_counter()
                if i >= args.warmup:
                    times[name]["batch"].append(t1 - t0)
                    times[name]["step"].append(t2 - t1)
        med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
        results[state] = {n: {**m, "step_vs_extract": m["step"] / med["extract"]["step"]} for n, m in med.items()}
        kept = runs["extract"][0].masked.kept_fraction("params")
        print(f"{state} (kept parameters {100 * kept:.1f}%): median ms per step / per batch, step vs extract")
        for n, m in results[state].items():
            print(f"  {n:30s} {1e3 * m['step']:7.1f}  {1e3 * m['batch']:6.1f}  {m['step_vs_extract']:.2f}x")
    out = Path(args.out) / f"robustness-cost-cpu-{datetime.date.today()}.json"
    out.write_text(json.dumps({"backbone": args.backbone, "batch": 8, "clip_seconds": 1.0, "threads": 1,
                               "steps": args.steps, "warmup": args.warmup, "options": OPTIONS,
                               "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                               "medians_s": results}, indent=1))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
