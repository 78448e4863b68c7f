"""`subnet extract`: train gates + a task head on a frozen encoder, compact, save, evaluate."""
from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_config_options, add_data_options


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("extract", help="train gates + a task head, compact, save, evaluate",
                       description="Extract a task-specific subnetwork: train the gates of a frozen "
                                   "encoder and a task head on TRAIN, keep the best state by VALID, "
                                   "remove the gated-off units, verify, save the artifact to OUT and "
                                   "evaluate it on TEST. Datasets are folder-per-class trees or "
                                   "JSONL/CSV manifests; PATH@SPLIT selects a manifest split.")
    add_data_options(p)
    p.add_argument("-t", type=float, default=0.5, help="sparsity target; budget loss: the kept fraction of the cost (default: 0.5)")
    add_config_options(p)
    p.add_argument("--probe", action="store_true", help="train the head only, all gates on (a linear probe)")
    p.add_argument("--skip-bad", action="store_true", help="skip and count bad files instead of stopping")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--refit", action="store_true",
                   help="then train a new head on the extracted units, gates fixed, with the same steps and "
                        "seed (`subnet baseline refit --reference OUT`): a second artifact in OUT/refit. The "
                        "head trained jointly with moving gates can lag behind what the final units allow")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import os

    import torch
    import torch.distributed as dist

    from ..training.extract import extract, format_table
    from ..training.loop import ExtractConfig
    from .options import config_from_args, split_tests

    if args.refit and args.probe:
        raise SystemExit("subnet extract: --refit needs gates to fix; a --probe has none (drop one of the two)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():  # under torchrun
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    cfg = config_from_args(args, ExtractConfig(t=args.t, train_gates=not args.probe))
    if cfg.distill and args.probe:
        raise SystemExit("subnet extract: --distill pulls the gated encoder towards the full one; a --probe has "
                         "no gates (drop one of the two)")
    if cfg.kd and args.probe:
        raise SystemExit("subnet extract: --kd pulls an extraction towards its --teacher probe; a --probe has no "
                         "gates (drop one of the two)")
    test, extra = split_tests(args.test)
    metrics = extract(args.backbone, args.train, args.valid, test, cfg, args.out, max_seconds=args.max_seconds,
                      skip_bad=args.skip_bad, resume=args.resume, progress=not args.quiet,
                      measure_latency=not args.no_latency, extra_tests=extra)
    if dist.is_initialized():
        dist.destroy_process_group()
    if metrics:
        print(format_table(metrics))
        print(f"artifact: {args.out} (metrics.json, log.jsonl)")
    if metrics and args.refit:
        from ..training.baselines import refit_extraction
        refit = refit_extraction(args.backbone, args.out, args.train, args.valid, test, cfg.seed,
                                 args.max_seconds, not args.quiet, not args.no_latency, rerun=True)
        print(f"refit (the same units, a new head trained with the gates fixed):\n{format_table(refit)}")
        from ..training.tasks import task_named
        better = task_named(cfg.task).better(refit["valid_at_best"], metrics["valid_at_best"])
        winner = "refit" if better else "extraction"
        print(f"artifact: {Path(args.out) / 'refit'}; validation {metrics['metric']}: extraction "
              f"{metrics['valid_at_best']:.4f}, refit {refit['valid_at_best']:.4f} ({winner} is better)")
    return 0
