"""Command-line options shared by extract, sweep and baseline: one flag per ExtractConfig field."""
from __future__ import annotations

import argparse
import math
from dataclasses import fields, replace

from ..data.augment import DEFAULT_SPEC
from ..training.loop import ExtractConfig

# ExtractConfig fields a command line may set; None on the command line = "not given"
_OPTIONS = {  # field: (flag, type, help)
    "task": ("--task", str, "classify | tag | ctc"),
    "kinds": ("--kinds", str, "unit kinds to gate (conv head ffn)"),
    "loss": ("--loss", str, "sparsity loss: seed | mean | budget"),
    "lam": ("--lambda", float, "weight of the sparsity loss"),
    "cost": ("--cost", str, "unit cost of the budget loss: params | flops | latency (measured per layer on "
             "this machine before training, so t is a fraction of the gated units' latency)"),
    "steps": ("--steps", int, "training steps"),
    "batch_size": ("--batch-size", int, "clips per batch"),
    "lr_gates": ("--lr-gates", float, "learning rate of the gate logits"),
    "lr_head": ("--lr-head", float, "learning rate of the task head"),
    "layer": ("--layer", str, "hidden state the head reads: an index or 'weighted'"),
    "head_dropout": ("--head-dropout", float, "dropout in the head"),
    "eval_every": ("--eval-every", int, "validate every N steps (keeps the best state)"),
    "checkpoint_every": ("--checkpoint-every", int, "checkpoint every N steps"),
    "warmup": ("--warmup", float, "fraction of the steps over which lambda ramps up"),
    "align": ("--align", int, "round the kept conv/FFN units of each group to a multiple of N at "
              "compaction, best gate logits first"),
    "seed": ("--seed", int, "random seed (data order, head init, baseline choices)"),
    "device": ("--device", str, "where training runs: auto (cuda when available) | cpu | cuda[:N]"),
    "dtype": ("--dtype", str, "fp32 | bf16 (autocast of the encoder's forward pass; gates and head in fp32)"),
    "compile": ("--compile", str, "torch.compile the encoder for training: default | reduce-overhead (CUDA "
                "graphs on a GPU) | max-autotune; compiling costs time up front, and again whenever "
                "--freeze-dead freezes units"),
    "freeze_dead": ("--freeze-dead", int, "freeze a unit whose gate stayed 0 for K steps: it stops being "
                    "computed (faster steps; 0 = never)"),
    "distill": ("--distill", float, "weight W of a loss pulling the gated encoder's hidden states towards the "
                "full encoder's on the same batch (DPHuBERT-style distillation; keeps more of what the full "
                "encoder does outside the training domain; one more encoder forward per step; 0 = off)"),
    "distill_layers": ("--distill-layers", str, "the states --distill compares: 'mix' (the head's layer mix), "
                       "'all' (every hidden state, averaged) or comma-separated hidden-state indices, e.g. 0,2,4"),
    "distill_loss": ("--distill-loss", str, "distance of --distill: mse | l1cos (DPHuBERT's L1 + cosine)"),
    "teacher": ("--teacher", str, "a probe of this encoder (the OUT of `subnet extract --probe` with the same --backbone, "
                "--max-seconds and training data): the teacher of --kd; none given: --kd trains one first into "
                "OUT/teacher (the same steps, batch and seed; reused when there)"),
    "kd": ("--kd", float, "weight W of a loss pulling the head's predictions towards the --teacher probe's on the "
           "same batch (prediction distillation: the extraction learns to answer as the full encoder's probe "
           "does, which carries its robustness outside the training domain; 0 = off)"),
    "kd_temperature": ("--kd-temperature", float, "temperature softening both predictions of --kd"),
    "teacher_input": ("--teacher-input", str, "what the teacher of --distill / --kd hears of an --augment-ed clip: "
                      "same (the augmented clip) | clean (the clip before the room, channel, noise and gain; its "
                      "speed and pitch changes kept): the kept units then learn to answer noisy input as the "
                      "full encoder answers clean input"),
    "unlabeled": ("--unlabeled", str, "clips without labels (folder tree or manifest[@split]), e.g. recordings "
                  "from where the model will be used: every step also applies --distill / --kd to a batch of "
                  "them, so the kept units learn what the full encoder does on that audio (labels ignored)"),
    "settle": ("--settle", float, "fraction of the steps, at the end, with every gate fixed where it is: the "
               "units then off are frozen and only the head trains, on the units it ships with (these "
               "steps skip the backward pass through the encoder; 0 = none)"),
}
_METAVARS = {"teacher": "PROBE", "unlabeled": "DATA", "kd": "W", "distill": "W"}
_CHOICES = {"distill_loss": ["mse", "l1cos"], "compile": ["default", "reduce-overhead", "max-autotune"], "dtype": ["fp32", "bf16"], "task": ["classify", "tag", "ctc"], "teacher_input": ["same", "clean"], "loss": ["seed", "mean", "budget"], "cost": ["params", "flops", "latency"]}


def add_data_options(p: argparse.ArgumentParser, backbone_required: bool = True) -> None:
    """--backbone/--train/--valid/--test/--max-seconds, shared by sweep and baseline."""
    p.add_argument("--backbone", required=backbone_required,
                   help="builtin name (whisper-tiny.en, whisper-base), transformers directory, or hub id")
    p.add_argument("--train", required=True, help="training data (folder tree or manifest[@split])")
    p.add_argument("--valid", required=True, help="validation data: picks the best state")
    p.add_argument("--test", action="append", metavar="[NAME=]DATA",
                   help="test data: the reported metric (default: the validation data); repeat with NAME=DATA "
                        "for more test sets (another domain, a degraded copy), each reported under its name "
                        "in metrics.json")
    p.add_argument("--max-seconds", type=float, default=2.0, help="crop clips to this length in seconds (default: 2.0)")


_GATE_OPTIONS = {"kinds", "loss", "lam", "cost", "lr_gates", "warmup", "freeze_dead", "settle", "distill",
                 "distill_layers", "distill_loss", "teacher", "kd", "kd_temperature", "teacher_input", "unlabeled"}


def add_config_options(p: argparse.ArgumentParser, defaults: ExtractConfig | None = None,
                       gates: bool = True, inherited: bool = False) -> None:
    """One flag per ExtractConfig field (without the gate-training ones unless `gates`); a
    missing flag stays None, so that a baseline can fall back on its reference's config
    (`inherited`: the help says so)."""
    d = defaults or ExtractConfig()
    for name, (flag, typ, text) in _OPTIONS.items():
        if name in _GATE_OPTIONS and not gates:
            continue
        kw = {"nargs": "+"} if name == "kinds" else {}
        default = getattr(d, name)
        shown = " ".join(default) if isinstance(default, tuple) else (default if default != "" else "off")
        source = "the reference's, else " if inherited else ""
        if name in _METAVARS:
            kw["metavar"] = _METAVARS[name]
        p.add_argument(flag, dest=name, type=typ, default=None, choices=_CHOICES.get(name),
                       help=f"{text} (default: {source}{shown})", **kw)
    if gates:
        p.add_argument("--coupled", action="store_true", default=None,
                       help="put lambda * L_s through Adam with the task loss (the paper's recipe)")
    p.add_argument("--no-front-end-cache", dest="cache_front_end", action="store_false", default=None,
                   help="recompute the conv front end every step even when no gate sits in it (same "
                        "results, slower; for timing comparisons)")
    if not gates:
        p.add_argument("--no-encoder-cache", dest="cache_encoder", action="store_false", default=None,
                       help="recompute the frozen encoder every step instead of once per clip (same "
                            "results, slower; for timing comparisons)")
    p.add_argument("--front-end", dest="front_end", nargs="+", metavar="KEY=VALUE", default=None,
                   help="change settings of the encoder's front end, e.g. hop=0.1 (CREPE: seconds between "
                        "frames); an unknown key lists the front end's settings")
    p.add_argument("--augment", nargs="?", const=DEFAULT_SPEC, default=None, metavar="SPEC",
                   help="augment every training clip: comma-separated effect=probability and setting=LO:HI "
                        "pairs (effects speed, pitch, reverb, band, noise, gain; e.g. noise=0.5,snr=0:20,"
                        f"reverb=0.3); alone: {DEFAULT_SPEC}. Never speed or pitch for a pitch task")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args, base: ExtractConfig | None = None) -> ExtractConfig:
    """`base` with every flag the user gave applied on top."""
    base = base or ExtractConfig()
    names = set(_OPTIONS) | {"coupled", "cache_encoder", "cache_front_end", "front_end", "augment"}  # not t (a sweep's list) nor train_gates (the method's)
    given = {f.name: getattr(args, f.name) for f in fields(ExtractConfig)
             if f.name in names and getattr(args, f.name, None) is not None}
    if "kinds" in given:
        given["kinds"] = tuple(given["kinds"])
    if "front_end" in given:
        from ..families.front_ends import parse_settings
        given["front_end"] = parse_settings(given["front_end"])
    if "layer" in given and given["layer"] != "weighted":
        given["layer"] = int(given["layer"])
    return replace(base, **given)


def split_tests(values: list[str] | None, flag: str = "--test") -> tuple[str | None, dict[str, str]]:
    """`--test` values -> (the main test set or None, {name: data} of the named ones).
    NAME=DATA names a set (NAME: letters, digits, - _ .); a value without a name is the main one."""
    import re
    from pathlib import Path
    main, named = None, {}
    for v in values or []:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)=(.+)", v)
        if m and not Path(v.split("@")[0]).exists():
            if m[1] in named:
                raise SystemExit(f"{flag}: two test sets named {m[1]!r} ({named[m[1]]}, {m[2]})")
            named[m[1]] = m[2]
        elif main is not None:
            raise SystemExit(f"{flag}: two unnamed test sets ({main}, {v}); name the extra ones NAME=DATA")
        else:
            main = v
    return main, named


class HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default where it has one (not the None / False of optional flags)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) \
                and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def positive_numbers(text: str, kind=float) -> list:
    """argparse type: "1,8" -> [1.0, 8.0]; every value positive and finite."""
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 or (isinstance(v, float) and not math.isfinite(v)) for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def positive_ints(text: str) -> list[int]:
    return positive_numbers(text, int)
