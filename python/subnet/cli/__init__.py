"""The `subnet` command line: a thin layer over the Python API, one module per subcommand."""
from __future__ import annotations

import argparse
import logging

from . import baseline, bench, data, demo, evaluate, export, extract, inspect, predict, report, sweep

COMMANDS = (inspect, extract, evaluate, predict, demo, data, sweep, baseline, report, bench, export)


def log_notices() -> None:
    """Show the library's notices (resampled files, random weights, ...) on stderr."""
    logger = logging.getLogger("subnet")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("subnet: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="subnet", description="Extract small, fast, task-specific subnetworks from pretrained audio encoders.")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv=None) -> int:
    log_notices()
    args = parser().parse_args(argv)
    return args.func(args)
