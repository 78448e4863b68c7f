"""The `subnet` command line: a thin layer over the Python API."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _inspect(args) -> int:
    import torch

    import subnet
    from subnet.compact import CompactInfo
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
    ref = base if base is not None else model
    mm = subnet.attach_masks(ref, kinds=tuple(args.kinds))
    keep = info.keep_masks() if info else {n: torch.ones(g.size, dtype=torch.bool) for n, g in mm.groups.items()}
    width = max(len(n) for n in mm.groups)
    print(f"{'unit group':<{width}}  kind   kept / total  params/unit")
    for name, group in mm.groups.items():
        k = int(keep[name].sum()) if name in keep else group.size
        print(f"{name:<{width}}  {group.kind:<5} {k:>6} / {group.size:<6} {group.params_per_unit:>10.0f}")
    n_base = sum(p.numel() for p in ref.parameters())
    n_now = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_now:,} of {n_base:,} ({100 * n_now / n_base:.1f}%)")
    return 0


def _demo(args) -> int:
    print("subnet demo: will build a small keyword-spotting set with speech synthesis (kws-tts),\n"
          "the real recorded digits of the Asterisk prompts (digits-real), extract a keyword-\n"
          "spotting subnetwork from the real Whisper tiny.en encoder and print accuracy, size and\n"
          "speed of the full and the compact model. The dataset recipes and the training loop are\n"
          "not built yet (issue 5); today the engine (gates, compaction, artifacts) is.")
    return 0


def main(argv=None) -> int:
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
    p = sub.add_parser("demo", help="the end-to-end demo (placeholder until the training loop lands)")
    p.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
