"""`subnet sweep`: one extraction per sparsity target, then a table and a Pareto plot."""
from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_config_options, add_data_options, config_from_args, split_tests


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..training.loop import ExtractConfig
    p = subparsers.add_parser(
        "sweep", help="one extraction per sparsity target, then a table and a Pareto plot",
        description="Run `subnet extract` once per sparsity target -t into OUT/t=<t>/ (settings that "
                    "already have a metrics.json are not rerun unless --rerun), then write OUT/sweep.md "
                    "(task metric, kept parameters, FLOPs, latency, file size per setting) and "
                    "OUT/sweep.png (metric against kept parameters and against measured batch-1 "
                    "latency as a percentage of the full encoder's, both timed interleaved in the same "
                    "run; Pareto front marked).")
    add_data_options(p)
    p.add_argument("-t", type=float, nargs="+", default=[0.2, 0.35, 0.5, 0.65, 0.8],
                   help="sparsity targets (budget loss: kept fraction of the gated cost)")
    add_config_options(p, ExtractConfig(loss="budget"))
    p.add_argument("--rerun", action="store_true",
                   help="start every setting afresh (default: skip finished ones, resume unfinished ones)")
    p.add_argument("--refit", action="store_true",
                   help="after each extraction, train a new head on its units with the gates fixed "
                        "(as `subnet extract --refit`), into OUT/t=<t>/refit; the table gets its metric")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..training.loop import ExtractConfig
    from ..training.sweep import sweep, sweep_table
    cfg = config_from_args(args, ExtractConfig(loss="budget"))
    test, extra = split_tests(args.test)
    results = sweep(args.backbone, args.train, args.valid, test, args.t, cfg, args.out,
                    max_seconds=args.max_seconds, progress=not args.quiet,
                    measure_latency=not args.no_latency, rerun=args.rerun, refit=args.refit, extra_tests=extra)
    print(sweep_table(results))
    print(f"table: {Path(args.out) / 'sweep.md'}  plot: {Path(args.out) / 'sweep.png'}")
    return 0
