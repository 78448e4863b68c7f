"""The `subnet` command line: a thin layer over the Python API."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _inspect(args) -> int:
    import torch

    import subnet
    from subnet.core.compact import CompactInfo
    from subnet.families import family_named

    src = Path(args.src)
    if (src / "subnet.json").is_file():
        model = subnet.load(src)
        info: CompactInfo = model.subnet_info
        base = family_named(info.family).build(info.base)
        print(f"compact {info.family} model from {src}")
    else:
        model, info, base = subnet.load_backbone(args.src), None, None
        print(f"backbone {type(model).__name__} from {args.src}")
    from subnet.families.costs import cost_table

    ref = base if base is not None else model
    # an artifact lists the kinds it was made with (e.g. a conformer's dwconv)
    kinds = tuple(sorted(set(info.kinds.values()))) if info else tuple(args.kinds)
    mm = subnet.attach_masks(ref, kinds=kinds)
    keep = info.keep_masks() if info else {n: torch.ones(g.size, dtype=torch.bool) for n, g in mm.groups.items()}
    print(cost_table(mm.family, ref, mm.groups, keep, sum(p.numel() for p in model.parameters())))
    mm.detach_backbone()
    return 0


def _extract(args) -> int:
    import os

    import torch
    import torch.distributed as dist

    from ..training.extract import extract, format_table
    from .options import config_from_args
    from ..training.loop import ExtractConfig

    if args.refit and args.probe:
        raise SystemExit("subnet extract: --refit needs gates to fix; a --probe has none (drop one of the two)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():  # under torchrun
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    cfg = config_from_args(args, ExtractConfig(t=args.t, train_gates=not args.probe))
    metrics = extract(args.backbone, args.train, args.valid, args.test, cfg, args.out, max_seconds=args.max_seconds,
                      skip_bad=args.skip_bad, resume=args.resume, progress=not args.quiet,
                      measure_latency=not args.no_latency)
    if dist.is_initialized():
        dist.destroy_process_group()
    if metrics:
        print(format_table(metrics))
        print(f"artifact: {args.out} (metrics.json, log.jsonl)")
    if metrics and args.refit:
        from ..training.baselines import refit_extraction
        refit = refit_extraction(args.backbone, args.out, args.train, args.valid, args.test, cfg.seed,
                                 args.max_seconds, not args.quiet, not args.no_latency, rerun=True)
        print(f"refit (the same units, a new head trained with the gates fixed):\n{format_table(refit)}")
        from ..training.loop import better
        winner = "refit" if better(cfg.task, refit["valid_at_best"], metrics["valid_at_best"]) else "extraction"
        print(f"artifact: {Path(args.out) / 'refit'}; validation {metrics['metric']}: extraction "
              f"{metrics['valid_at_best']:.4f}, refit {refit['valid_at_best']:.4f} ({winner} is better)")
    return 0


def _evaluate(args) -> int:
    import json

    from ..training.extract import evaluate_artifact

    result = evaluate_artifact(args.artifact, args.data, args.max_seconds, args.batch_size, args.skip_bad)
    print(f"{result['metric']}: {result['value']:.4f} on {result['clips']} clips of {args.data}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def _predict(args) -> int:
    import torch

    from ..data import decode
    from ..training.pipeline import load_pipeline

    pipe = load_pipeline(args.artifact)
    if pipe.task == "ctc":
        from ..training.metrics import ctc_greedy
    for f in args.files:
        wave = decode(f, pipe.front_end.sample_rate)
        if args.max_seconds:
            wave = wave[: int(args.max_seconds * pipe.front_end.sample_rate)]
        with torch.no_grad():
            logits, frames = pipe(wave[None], torch.tensor([wave.shape[0]]))
        if pipe.task == "classify":
            p = logits.softmax(-1)[0]
            i = int(p.argmax())
            print(f"{f}\t{pipe.labels[i]}\t{float(p[i]):.3f}")
        elif pipe.task == "tag":
            p = logits.sigmoid()[0]
            tags = [f"{pipe.labels[i]}:{float(p[i]):.2f}" for i in torch.nonzero(p > 0.5).flatten().tolist()]
            print(f"{f}\t{' '.join(tags) or '-'}")
        else:
            seq = ctc_greedy(logits, frames)[0]
            print(f"{f}\t{''.join(pipe.labels[i - 1] for i in seq)}")
    return 0


def _demo(args) -> int:
    """Keyword spotting from the real Whisper tiny.en encoder, tested on real recordings."""
    import json

    from ..data.recipes import build_recipe
    from ..training.extract import extract, format_table
    from ..training.loop import ExtractConfig

    root = Path(args.out)
    data = root / "data"
    print(f"[1/3] datasets under {data} (speech synthesis for training, real recordings for testing)")
    kws = data / "kws-tts" / "manifest.jsonl"
    if not kws.is_file():
        kws = build_recipe("kws-tts", data / "kws-tts", seed=0, size="small", overwrite=True)
    digits = data / "digits-real" / "manifest.jsonl"
    if not digits.is_file():
        digits = build_recipe("digits-real", data / "digits-real", seed=0, size="small", overwrite=True)
    english = data / "digits-real" / "english.jsonl"  # the model learns English words
    english.write_text("".join(line for line in digits.read_text().splitlines(keepends=True)
                               if json.loads(line).get("language") == "en"))
    print(f"[2/3] extracting a keyword-spotting subnetwork of whisper-tiny.en ({args.steps} steps, "
          f"keep {args.t:.0%} of the gated parameters)")
    cfg = ExtractConfig(task="classify", loss="budget", t=args.t, steps=args.steps, batch_size=16,
                        eval_every=50, seed=0)
    out = root / "kws-whisper-tiny"
    metrics = extract("whisper-tiny.en", f"{kws}@train", f"{kws}@valid", f"{kws}@test", cfg, out,
                      max_seconds=1.5, progress=True)
    print("[3/3] the compact model on real recorded English digits (Asterisk prompts, never seen in training)")
    from ..training.extract import eval_batches
    from ..training.pipeline import load_pipeline
    from ..training.loop import score
    from ..data import load_dataset
    from ..data.vocab import LabelVocab
    import torch
    pipe = load_pipeline(out)
    ds = load_dataset(english, sample_rate=16000, vocab=LabelVocab(pipe.labels), max_seconds=1.5)
    outs, targets = [], []
    with torch.no_grad():
        for b in eval_batches(ds, 16, "classify"):
            outs.append(pipe(b.waves, b.lengths)[0]), targets.append(b.targets)
    real = score("classify", outs, targets, [], pipe.labels)
    metrics["real_digits_accuracy"] = real["value"]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(format_table(metrics))
    print(f"accuracy on {real['n']} real recorded English digits: {real['value']:.3f} "
          f"(chance {1 / len(pipe.labels):.3f})")
    print(f"artifact: {out}  (try: subnet inspect {out}; subnet predict {out} FILE.wav)")
    return 0


def _log_notices() -> None:
    """Show the library's notices (resampled files, random weights, ...) on stderr."""
    import logging
    logger = logging.getLogger("subnet")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("subnet: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv=None) -> int:
    _log_notices()
    parser = argparse.ArgumentParser(
        prog="subnet", description="Extract small, fast, task-specific subnetworks from pretrained audio encoders.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="list the unit groups of a backbone or compact artifact",
                       description="Print every unit group (kind, kept / total units, parameters per unit) "
                                   "of a backbone (builtin name or transformers directory) or of a "
                                   "compact artifact directory.")
    p.add_argument("src", help="artifact directory, transformers directory or builtin name (whisper-tiny.en)")
    p.add_argument("--kinds", nargs="+", default=["conv", "head", "ffn"], help="unit kinds to list")
    p.set_defaults(func=_inspect)
    p = sub.add_parser("extract", help="train gates + a task head, compact, save, evaluate",
                       description="Extract a task-specific subnetwork: train the gates of a frozen "
                                   "encoder and a task head on TRAIN, keep the best state by VALID, "
                                   "remove the gated-off units, verify, save the artifact to OUT and "
                                   "evaluate it on TEST. Datasets are folder-per-class trees or "
                                   "JSONL/CSV manifests; PATH@SPLIT selects a manifest split.")
    from .options import add_config_options, add_data_options
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
    p.set_defaults(func=_extract)
    p = sub.add_parser("evaluate", help="an artifact's task metric on a dataset",
                       description="Evaluate an extracted artifact on any dataset with the same labels.")
    p.add_argument("artifact")
    p.add_argument("--data", required=True)
    p.add_argument("--json", help="also write the result (metric, value, clips) to this file")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-seconds", type=float, default=2.0)
    p.add_argument("--skip-bad", action="store_true")
    p.set_defaults(func=_evaluate)
    p = sub.add_parser("predict", help="label (and score) per audio file",
                       description="Run an extracted artifact on audio files: label and score per file.")
    p.add_argument("artifact")
    p.add_argument("files", nargs="+")
    p.add_argument("--max-seconds", type=float, default=None)
    p.set_defaults(func=_predict)
    p = sub.add_parser("demo", help="keyword spotting from the real Whisper tiny.en, end to end",
                       description="Build a keyword-spotting set with speech synthesis and a test set of "
                                   "real recorded digits, extract a subnetwork of the real Whisper "
                                   "tiny.en encoder, and print accuracy, size and speed.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="demo-out", help="where data and the artifact go")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("-t", type=float, default=0.5, help="kept fraction of the gated parameters")
    p.set_defaults(func=_demo)
    from ..training.baselines import add_baseline_parser
    from ..measure.bench import add_bench_parser
    from .data import add_data_parser
    from ..export import add_export_parser
    from ..report import add_report_parser
    from ..training.sweep import add_sweep_parser
    for add in (add_data_parser, add_sweep_parser, add_baseline_parser, add_report_parser, add_bench_parser,
                add_export_parser):
        add(sub)
    args = parser.parse_args(argv)
    return args.func(args)

