"""`subnet baseline probe|scratch|random|refit|importance`: what an extraction has to beat."""
from __future__ import annotations

import argparse

from ..training.baselines import METHODS
from .options import add_config_options, add_data_options, config_from_args, split_tests

_HELP = {
    "probe": ("the full frozen encoder + the same head, no gates",
              "Train only the task head on the full frozen encoder (all gates on): the reference that "
              "an extracted subnetwork should match. --reference takes the training config of an "
              "extraction (same steps, head and seed)."),
    "scratch": ("the artifact's compact architecture, randomly initialised, trained end to end",
                "Build the compact architecture of the --reference artifact with random weights and "
                "train all of them + the head, for the reference's steps x --steps-factor."),
    "random": ("random units with the artifact's per-layer counts, head trained",
               "Keep uniformly random units, exactly as many per group (layer x kind) as the --reference "
               "artifact keeps, in the frozen pretrained encoder; train the head."),
    "refit": ("the artifact's own units, a new head trained like random's",
              "Keep exactly the units the --reference artifact keeps, in the frozen pretrained encoder, and "
              "train a new head as `random` does: the two then differ only in the units (an extraction's "
              "own head learned while its gates were still changing)."),
    "importance": ("one-shot gradient x activation pruning to the artifact's per-layer counts",
                   "Train the head on the full frozen encoder for --prune-at of the steps, score every "
                   "unit by |sum dL/dg| (its gate gradient, all gates on) over --score-batches batches, "
                   "keep the top units of each group (the --reference artifact's counts), train the "
                   "head on for the remaining steps."),
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "baseline", help="probe / scratch / random / refit / importance baselines (metrics.json like extract)",
        description="Baselines for an extraction, each writing an artifact and a metrics.json in the "
                    "format of `subnet extract` (so `subnet report` reads them all). Options not given "
                    "are taken from the --reference artifact's config.json.")
    sub = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    for method in METHODS:
        short, long = _HELP[method]
        q = sub.add_parser(method, help=short, description=long)
        add_data_options(q, backbone_required=method in ("probe", "random", "refit", "importance"))
        q.add_argument("--reference", required=method != "probe",
                       help="artifact directory of an extraction (subnet.json [+ config.json])")
        if method == "scratch":
            q.add_argument("--steps-factor", type=float, default=1.0,
                           help="train for this many times the steps (e.g. 4 for a longer budget; default: 1)")
            q.add_argument("--lr-encoder", type=float, default=5e-4,
                           help="learning rate of the encoder weights (default: 5e-4)")
        if method == "importance":
            q.add_argument("--prune-at", type=float, default=0.3,
                           help="fraction of the steps the head trains on the full encoder before scoring")
            q.add_argument("--score-batches", type=int, default=8, help="training batches the scores sum over")
        add_config_options(q, gates=False, inherited=True)  # the gates are fixed in every baseline
        q.add_argument("--out", required=True, help="output directory")
        q.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..training.baselines import importance, probe, random_units, reference_config, refit, scratch
    from ..training.extract import format_table
    common = dict(out=args.out, max_seconds=args.max_seconds, progress=not args.quiet,
                  measure_latency=not args.no_latency)
    from ..training.extract import evaluate_extra
    test, extra = split_tests(args.test)
    data = (args.train, args.valid, test)
    if args.method == "probe":
        cfg = config_from_args(args, reference_config(args.reference) if args.reference else None)
        m = probe(args.backbone, *data, cfg, **common)
    else:
        cfg = config_from_args(args, reference_config(args.reference))
        if args.method == "scratch":
            m = scratch(args.reference, *data, cfg, steps_factor=args.steps_factor, lr_encoder=args.lr_encoder,
                        **common)
        elif args.method == "random":
            m = random_units(args.backbone, args.reference, *data, cfg, **common)
        elif args.method == "refit":
            m = refit(args.backbone, args.reference, *data, cfg, **common)
        else:
            m = importance(args.backbone, args.reference, *data, cfg, prune_at=args.prune_at,
                           score_batches=args.score_batches, **common)
    if extra:
        m["extra"] = evaluate_extra(args.out, extra, args.max_seconds)
    print(format_table(m))
    print(f"{args.method}: {args.out} (metrics.json, log.jsonl, artifact)")
    return 0
