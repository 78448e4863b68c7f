"""`subnet evaluate DIR --data D`: an artifact's task metric on any dataset with the same labels."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="an artifact's task metric on a dataset",
                       description="Evaluate an extracted artifact on any dataset with the same labels.")
    p.add_argument("artifact")
    p.add_argument("--data", required=True)
    p.add_argument("--json", help="also write the result (metric, value, clips) to this file")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-seconds", type=float, default=2.0)
    p.add_argument("--skip-bad", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import json

    from ..training.extract import evaluate_artifact

    result = evaluate_artifact(args.artifact, args.data, args.max_seconds, args.batch_size, args.skip_bad)
    print(f"{result['metric']}: {result['value']:.4f} on {result['clips']} clips of {args.data}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0
