"""`subnet predict DIR FILE...`: the artifact's prediction per audio file (label and score, tags, or text)."""
from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("predict", help="label (and score) per audio file",
                       description="Run an extracted artifact on audio files: label and score per file.")
    p.add_argument("artifact")
    p.add_argument("files", nargs="+")
    p.add_argument("--max-seconds", type=float, default=None)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import torch

    from ..data import decode
    from ..training.pipeline import load_pipeline

    pipe = load_pipeline(args.artifact)
    rate = pipe.front_end.sample_rate
    for f in args.files:
        wave = decode(f, rate)
        if args.max_seconds:
            wave = wave[: int(args.max_seconds * rate)]
        with torch.no_grad():
            logits, frames = pipe(wave[None], torch.tensor([wave.shape[0]]))
        print(f"{f}\t{pipe.task.predictions(logits, frames, pipe.labels)[0]}")
    return 0
