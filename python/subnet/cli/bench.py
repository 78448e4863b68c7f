"""`subnet bench`: latency, throughput, memory, FLOPs and size, compact vs dense (or --vs)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .options import HelpFormatter, positive_ints, positive_numbers


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="latency, throughput, memory, FLOPs and size: compact vs dense",
        description="Measure a model (compact artifact directory, transformers directory or builtin "
                    "name) and, in the same process with calls interleaved after warm-up, the model "
                    "it is compared with: --vs, or for a compact artifact its dense base architecture "
                    "(random weights: timing does not depend on them). Inputs are random 16 kHz "
                    "clips through the model's front end. A latency ratio whose p10-p90 range "
                    "contains 1.0 is reported as 'no measurable difference', never as a speedup.",
        formatter_class=HelpFormatter)
    p.add_argument("src", metavar="DIR|SRC", help="compact artifact directory, transformers directory or builtin name")
    p.add_argument("--vs", metavar="DIR|SRC", help="compare with this model instead of the artifact's dense base")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--batch", type=positive_ints, default="1,8", help="batch sizes, comma-separated")
    p.add_argument("--seconds", type=positive_numbers, default="1", help="clip lengths in seconds, comma-separated")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="fp32", help="weights and inputs dtype")
    p.add_argument("--repeats", type=int, default=15, help="timed calls per model and configuration")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per model first")
    p.add_argument("--threads", type=int, help="torch CPU threads (unset: torch's choice)")
    p.add_argument("--compile", nargs="?", const="default", choices=["default", "reduce-overhead", "max-autotune"],
                   help="time torch.compile of both models in this mode (compiled before warm-up; fuses the "
                        "elementwise work that pruning does not shrink; reduce-overhead replays CUDA graphs "
                        "on a GPU)")
    p.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch",
                   help="what runs the models: PyTorch, or onnxruntime (CPU, fp32: each model exported to "
                        "ONNX for the configuration's shapes, checked against PyTorch, its session timed "
                        "with --threads intra-op threads)")
    p.add_argument("--no-flops", action="store_true", help="skip counting FLOPs")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory call")
    p.add_argument("--json", help="also write the full report (per-call statistics) to this file")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import torch

    from ..export import ExportError
    from ..measure.bench import dense_base_of, format_report, load_subject, run_bench

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("subnet bench: --device cuda, but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_subject(args.src)
    if args.vs:
        subjects = {"model": model, "baseline": load_subject(args.vs)}
    elif model.kind == "compact":
        subjects = {"compact": model, "dense": dense_base_of(model)}
    else:
        subjects = {"model": model}
    try:
        report = run_bench(subjects, args.batch, args.seconds, args.device, args.dtype, args.repeats,
                           args.warmup, flops=not args.no_flops, memory=not args.no_memory,
                           compile=args.compile, runtime=args.runtime)
    except (ValueError, ExportError) as e:  # e.g. more seconds than a Whisper window holds
        raise SystemExit(f"subnet bench: {e}") from None
    print(format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0
