"""`subnet demo`: keyword spotting from the real Whisper tiny.en encoder, tested on real recordings."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="keyword spotting from the real Whisper tiny.en, end to end",
                       description="Build a keyword-spotting set with speech synthesis and a test set of "
                                   "real recorded digits, extract a subnetwork of the real Whisper "
                                   "tiny.en encoder, and print accuracy, size and speed.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="demo-out", help="where data and the artifact go")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("-t", type=float, default=0.5, help="kept fraction of the gated parameters")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Keyword spotting from the real Whisper tiny.en encoder, tested on real recordings."""
    import json

    from ..data.recipes import build_recipe
    from ..training.extract import evaluate_artifact, extract, format_table
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
    real = evaluate_artifact(out, english, max_seconds=1.5)
    metrics["real_digits_accuracy"] = real["value"]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(format_table(metrics))
    print(f"accuracy on {real['clips']} real recorded English digits: {real['value']:.3f} "
          f"(chance {1 / len(json.loads((out / 'subnet.json').read_text())['extra']['labels']):.3f})")
    print(f"artifact: {out}  (try: subnet inspect {out}; subnet predict {out} FILE.wav)")
    return 0
