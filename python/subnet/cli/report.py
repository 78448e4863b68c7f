"""`subnet report RUNS... --out DIR`: report.md + figures from extraction, sweep and baseline runs."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report", help="report.md + figures from extraction, sweep and baseline runs",
        description="Read the metrics.json (and subnet.json) of every run in or under RUNS and write "
                    "DIR/report.md with per-task tables, the largest pruning within 1 point of the probe, "
                    "extraction against the baselines at equal size, and PNG figures: metric against "
                    "kept parameters per method, Pareto fronts, kept units per layer, latency and file size. "
                    "Runs of several tasks on one backbone also get one extraction of each side by side and "
                    "how much their kept units overlap (Jaccard index against chance).")
    p.add_argument("runs", nargs="+", metavar="RUNS", help="run directories or folders holding them")
    p.add_argument("--out", required=True, help="output directory for report.md and the PNGs")
    p.add_argument("--title", default="subnet report", help="report title")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..report import write_report
    drawn = write_report(args.runs, args.out, args.title)
    print(f"report: {Path(args.out) / 'report.md'} ({len(drawn)} figures)")
    return 0
