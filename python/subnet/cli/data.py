"""``subnet data build | list | check | degrade``: dataset recipes, checks and shifted copies."""
from __future__ import annotations

import argparse
import json
import sys


def _recipes_epilog() -> str:
    from ..data.recipes import RECIPES

    width = max(map(len, RECIPES))
    lines = ["recipes:"] + [f"  {n:<{width}}  {r.summary}" for n, r in sorted(RECIPES.items())]
    lines += ["", "example:", "  subnet data build kws-tts --out data/kws --size small",
              "  subnet data build digits-real --out data/digits",
              "", "Missing Debian packages are named with the apt-get command; .ci/install-audio.sh installs all."]
    return "\n".join(lines)


def _build(args) -> int:
    from ..data.recipes import ToolMissing, build_recipe

    try:
        manifest = build_recipe(args.recipe, args.out, seed=args.seed, size=args.size, overwrite=args.force,
                                progress=not args.quiet)
    except (ToolMissing, FileExistsError) as e:
        print(f"subnet data build: {e}", file=sys.stderr)
        return 2
    info = json.loads((manifest.parent / "recipe.json").read_text())
    splits = ", ".join(f"{k} {v}" for k, v in info["splits"].items())
    print(f"{args.recipe}: {info['clips']} clips ({splits}), {len(info['classes']) or 'no'} classes, "
          f"{info['build_seconds']} s -> {manifest}")
    for reason, left in info["left_out"].items():
        print(f"  left out {left['count']}: {reason} (e.g. {left['examples'][0]})")
    for note in info["notes"]:
        print(f"  note: {note}")
    return 0


def _list(args) -> int:
    import shutil

    from ..data.recipes import RECIPES

    for name, r in sorted(RECIPES.items()):
        missing = [p for p in r.packages if not _package_installed(p)] if shutil.which("dpkg-query") else []
        state = "ready" if not missing else f"needs: apt-get install -y {' '.join(missing)}"
        print(f"{name}: {r.summary}\n  {state}")
        for size, what in r.sizes.items():
            print(f"  --size {size:<5}  {what}")
    return 0


def _package_installed(pkg: str) -> bool:
    import subprocess

    res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return "install ok installed" in res.stdout


def _check(args) -> int:
    from ..data.dataset import load_dataset
    from ..data.errors import BadInputError
    from ..data.vocab import LabelVocab

    vocab = LabelVocab.load(args.vocab) if args.vocab else None
    try:
        ds = load_dataset(args.src, split=args.split, vocab=vocab, skip_bad=args.skip_bad, progress=not args.quiet)
    except BadInputError as e:
        print(f"subnet data check: {e}", file=sys.stderr)
        return 1
    seconds = sum(ds.checked.seconds(i) for i in range(len(ds)))
    print(f"{args.src}{f' [{args.split}]' if args.split else ''}: {len(ds)} clips, {seconds / 60:.1f} min, "
          f"target {ds.kind}" + (f", {len(ds.vocab)} classes" if ds.vocab else ""))
    print(f"  {ds.summary}")
    if args.json:
        out = {"clips": len(ds), "seconds": round(seconds, 3), "kind": ds.kind,
               "labels": ds.vocab.labels if ds.vocab else None, "skipped": ds.summary.as_dict()}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


def _degrade(args) -> int:
    from ..data.degrade import degrade, degrade_config

    try:
        config = degrade_config(args.noise_snr, args.noise_colour, args.noise_dir, args.reverb_rt60,
                                args.reverb_drr, args.band)
        manifest = degrade(args.src, args.out, config, seed=args.seed, split=args.split, overwrite=args.force,
                           progress=not args.quiet)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"subnet data degrade: {e}", file=sys.stderr)
        return 2
    info = json.loads((manifest.parent / "recipe.json").read_text())
    print(f"degraded {info['clips']} clips of {info['source']} -> {manifest}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..data.recipes import RECIPES, SIZES

    fmt = argparse.RawDescriptionHelpFormatter
    data = subparsers.add_parser("data", help="build dataset recipes, check datasets",
                                 description="Datasets for extraction: build reproducible ones from installed "
                                             "Debian audio packages, or check your own.",
                                 epilog=_recipes_epilog(), formatter_class=fmt)
    sub = data.add_subparsers(dest="data_command", required=True, metavar="{build,list,check,degrade}")

    p = sub.add_parser("build", help="build a dataset recipe into a folder",
                       description="Build a dataset recipe: WAV files, manifest.jsonl (path, label | labels | "
                                   "text, split, source, licence) and recipe.json (seed, size, counts, anything "
                                   "left out). The same recipe, seed and size give the same files.",
                       epilog=_recipes_epilog(), formatter_class=fmt)
    p.add_argument("recipe", choices=sorted(RECIPES), metavar="RECIPE", help="one of: " + ", ".join(sorted(RECIPES)))
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty; --force rebuilds)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", choices=SIZES, default="small",
                   help="tiny (tests), small (default; minutes) or full (every voice / program)")
    p.add_argument("--force", action="store_true", help="replace an earlier build in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_build)

    p = sub.add_parser("list", help="list the recipes, their sizes and missing packages",
                       description="List every recipe with its sizes and whether its Debian packages are installed.")
    p.set_defaults(func=_list)

    p = sub.add_parser("check", help="validate a dataset (folder tree or manifest) before training",
                       description="Open every file's header, check labels and classes, and report bad input "
                                   "with the file, manifest line and fix. Exit code 1 when bad input is found "
                                   "(unless --skip-bad).")
    p.add_argument("src", help="folder-per-class tree (ROOT/CLASS/*.wav) or .jsonl / .csv manifest")
    p.add_argument("--split", help="only this split (train, valid, test, ...)")
    p.add_argument("--vocab", metavar="JSON", help='labels.json ({"labels": [...]}) the labels must come from')
    p.add_argument("--skip-bad", action="store_true", help="skip bad files and count them instead of failing")
    p.add_argument("--json", metavar="OUT", help="also write the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_check)

    p = sub.add_parser("degrade", help="write a noisy / reverberant / band-limited copy of a dataset",
                       description="A shifted test set: every clip of SRC degraded by each effect asked (noise "
                                   "at an SNR, reverb from a synthetic room impulse response, telephone band or "
                                   "low-pass), written as WAV at its own sample rate with the same labels, "
                                   "splits and manifest fields; recipe.json records the settings. The same "
                                   "seed gives the same files. A value LO:HI draws each clip's setting "
                                   "uniformly from that range.",
                       epilog="example:\n  subnet data degrade kws/manifest.jsonl@test --out kws-phone "
                              "--band telephone --noise-snr 10 --seed 0", formatter_class=fmt)
    p.add_argument("src", help="folder-per-class tree or .jsonl / .csv manifest (PATH@SPLIT: one split)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty; --force rebuilds)")
    p.add_argument("--split", help="only this split")
    p.add_argument("--noise-snr", metavar="DB", help="add noise at this SNR in dB (or LO:HI)")
    p.add_argument("--noise-colour", choices=("white", "pink", "brown", "file"), default="white",
                   help="noise colour (default white); file: excerpts of the clips in --noise-dir")
    p.add_argument("--noise-dir", metavar="DIR", help="folder of noise clips (with --noise-colour file)")
    p.add_argument("--reverb-rt60", metavar="S", help="reverberate with this RT60 in seconds (or LO:HI)")
    p.add_argument("--reverb-drr", metavar="DB", default="0:10",
                   help="direct-to-reverberant ratio in dB (default 0:10)")
    p.add_argument("--band", metavar="telephone|lowpass:HZ", help="telephone band (300-3400 Hz) or a low-pass")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--force", action="store_true", help="replace an earlier build in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_degrade)
    return data
