"""`subnet evaluate DIR --data D`: an artifact's task metric on any dataset with the same labels."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="an artifact's task metric on a dataset",
                       description="Evaluate an extracted artifact on any dataset with the same labels. "
                                   "Repeat --data NAME=DATA for several sets (other domains, degraded copies).")
    p.add_argument("artifact")
    p.add_argument("--data", required=True, action="append", metavar="[NAME=]DATA",
                   help="folder tree or manifest[@split]; NAME=DATA names it (repeatable)")
    p.add_argument("--json", help="also write the result (metric, value, clips; per name with several sets) to this file")
    p.add_argument("--record", action="store_true",
                   help="also write the named sets' results into the artifact's metrics.json (under \"extra\")")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-seconds", type=float, default=2.0)
    p.add_argument("--skip-bad", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import json

    from ..training.extract import evaluate_artifact, evaluate_extra
    from .options import split_tests

    main, named = split_tests(args.data, "--data")
    results = {}
    if main is not None:
        results[""] = evaluate_artifact(args.artifact, main, args.max_seconds, args.batch_size, args.skip_bad)
        r = results[""]
        print(f"{r['metric']}: {r['value']:.4f} on {r['clips']} clips of {main}")
    if named:
        extra = evaluate_extra(args.artifact, named, args.max_seconds, args.batch_size, args.skip_bad,
                               record=args.record)
        for name, r in extra.items():
            print(f"{name}: {r['metric']} {r['value']:.4f} on {r['clips']} clips of {r['data']}")
        results.update(extra)
    if args.json:
        Path(args.json).write_text(json.dumps(results[""] if list(results) == [""] else results, indent=1))
    return 0

