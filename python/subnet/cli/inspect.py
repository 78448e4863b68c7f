"""`subnet inspect SRC|DIR`: the unit groups of a backbone or compact artifact, with their costs."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("inspect", help="list the unit groups of a backbone or compact artifact",
                       description="Print every unit group (kind, kept / total units, parameters per unit) "
                                   "of a backbone (builtin name or transformers directory) or of a "
                                   "compact artifact directory.")
    p.add_argument("src", help="artifact directory, transformers directory or builtin name (whisper-tiny.en)")
    p.add_argument("--kinds", nargs="+", default=["conv", "head", "ffn"], help="unit kinds to list")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
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
