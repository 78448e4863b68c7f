"""`subnet export`: the compact encoder (or whole pipeline) as ONNX or TorchScript, checked."""
from __future__ import annotations

import argparse

from .options import HelpFormatter


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="the compact encoder (or whole pipeline) as ONNX or TorchScript",
        description="Export a compact artifact's encoder (input: the front end's features, output: the "
                    "last hidden state) or, with --pipeline, encoder + task head (features and the "
                    "frames mask in, logits out). The batch axis is dynamic where the graph allows it, "
                    "the clip length is fixed (--seconds). The exported file is run on a fresh random "
                    "input (ONNX through onnxruntime) and must match PyTorch within 1e-4 of the "
                    "output's magnitude.", formatter_class=HelpFormatter)
    p.add_argument("artifact", metavar="DIR", help="compact artifact directory (from subnet extract or subnet.save)")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx",
                   help="onnx (checked in onnxruntime) or torchscript")
    p.add_argument("--out", metavar="FILE", help="output file (unset: DIR/encoder.onnx, DIR/pipeline.pt, ...)")
    p.add_argument("--pipeline", action="store_true", help="export encoder + task head, not the encoder alone")
    p.add_argument("--seconds", type=float, help="clip length of the example input (unset: Whisper's "
                   "window, else 1 s); a Whisper encoder is exported for this window")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..export import ExportError, export

    try:
        r = export(args.artifact, args.format, args.out, args.pipeline, args.seconds, args.opset)
    except (ExportError, ValueError) as e:
        raise SystemExit(f"subnet export: {e}") from None
    shapes = ", ".join(f"{k} {v}" for k, v in r["inputs"].items())
    print(f"wrote {r['path']} ({r['bytes'] / 2**20:.2f} MB, {r['format']})")
    print(f"inputs: {shapes}; batch axis {'dynamic' if r['dynamic_batch'] else 'fixed'}")
    print(f"matches PyTorch: max relative difference {r['relative_error']:.2e}")
    return 0
