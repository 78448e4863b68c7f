"""subnet data degrade: a degraded copy of a dataset, deterministic for a seed, with the same
labels, splits and fields, at the SNR asked."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import soundfile as sf

from subnet.data import load_dataset
from subnet.cli import main
from subnet.data.degrade import degrade, degrade_config

CLIPS = [  # (path, label, split, rate, seconds)
    ("train/yes/a.wav", "yes", "train", 16000, 1.0), ("train/no/b.wav", "no", "train", 16000, 0.7),
    ("test/yes/c.wav", "yes", "test", 16000, 0.5), ("test/no/d.wav", "no", "test", 8000, 0.8),
    ("test/no/e.flac", "no", "test", 16000, 0.3)]


@pytest.fixture
def source(tmp_path):
    """A manifest of harmonic tones with pauses (8 and 16 kHz, wav and flac) and extra fields."""
    root = tmp_path / "src"
    rows = []
    for k, (rel, label, split, rate, secs) in enumerate(CLIPS):
        t = np.arange(round(secs * rate)) / rate
        x = sum(np.sin(2 * np.pi * (150 + 40 * k) * h * t) / h for h in (1, 2, 3)) * (np.sin(2 * np.pi * 3 * t) > 0)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / rel), (0.9 * x / np.abs(x).max()).astype(np.float32), rate)
        rows.append({"path": rel, "label": label, "split": split, "source": f"tone {k}", "licence": "CC0",
                     "voice": f"v{k}"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "manifest.jsonl"


def digest(manifest):
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return {"manifest": manifest.read_text(),
            **{r["path"]: hashlib.sha256((manifest.parent / r["path"]).read_bytes()).hexdigest() for r in rows}}


ALL = degrade_config(noise_snr="5", colour="pink", reverb_rt60="0.6", band="telephone")


def test_deterministic_for_a_seed(source, tmp_path):
    a = degrade(source, tmp_path / "a", ALL, seed=3, progress=False)
    b = degrade(source, tmp_path / "b", ALL, seed=3, progress=False)
    c = degrade(source, tmp_path / "c", ALL, seed=4, progress=False)
    assert digest(a) == digest(b)
    da, dc = digest(a), digest(c)
    assert all(da[k] != dc[k] for k in da if k != "manifest")
    # a clip's degradation depends on the seed and its path only, not on the clips selected
    t = degrade(f"{source}@test", tmp_path / "t", ALL, seed=3, progress=False)
    dt = digest(t)
    assert set(dt) - {"manifest"} == {r[0].replace(".flac", ".wav") for r in CLIPS if r[2] == "test"}
    assert all(dt[k] == da[k] for k in dt if k != "manifest")


def test_labels_splits_fields_and_rates_kept(source, tmp_path):
    out = degrade(source, tmp_path / "d", ALL, seed=0, progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    want = {rel.replace(".flac", ".wav"): (k, rel, label, split, rate, secs)
            for k, (rel, label, split, rate, secs) in enumerate(CLIPS)}
    assert sorted(r["path"] for r in rows) == sorted(want)
    for r in rows:
        k, rel, label, split, rate, secs = want[r["path"]]
        fields = (r["label"], r["split"], r["source"], r["licence"], r["voice"])
        assert fields == (label, split, f"tone {k}", "CC0", f"v{k}")
        assert r["degraded_from"] == str(source.parent / rel)
        info = sf.info(str(out.parent / r["path"]))
        assert info.samplerate == rate and info.frames == round(secs * rate)
    ds = load_dataset(out, split="test", progress=False)
    assert sorted(ds.vocab.labels) == ["no", "yes"] and len(ds) == 3
    meta = json.loads((out.parent / "recipe.json").read_text())
    assert meta["recipe"] == "degrade" and meta["settings"]["snr"] == [5.0, 5.0]
    assert meta["settings"]["rt60"] == [0.6, 0.6] and meta["settings"]["telephone"] == 1.0


@pytest.mark.parametrize("snr", [0.0, 5.0, 20.0])
def test_snr_of_the_output(source, tmp_path, snr):
    out = degrade(source, tmp_path / "n", degrade_config(noise_snr=snr), seed=1, progress=False)
    for r in (json.loads(line) for line in out.read_text().splitlines()):
        y, _ = sf.read(str(out.parent / r["path"]), dtype="float64")
        x, _ = sf.read(r["degraded_from"], dtype="float64")
        a = (y @ x) / (x @ x)  # the clip may have been scaled down as a whole (peak limit)
        measured = 10 * math.log10(np.sum((a * x) ** 2) / np.sum((y - a * x) ** 2))
        assert measured == pytest.approx(snr, abs=0.5)


def test_folder_tree_and_cli(source, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "degrade", str(source.parent / "train"), "--out", str(out), "--band", "lowpass:2000",
                      "--seed", "2", "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(r["path"], r["label"]) for r in rows] == [("no/b.wav", "no"), ("yes/a.wav", "yes")]
    assert json.loads((out / "recipe.json").read_text())["settings"]["cutoff"] == [2000.0, 2000.0]
    assert main(["data", "degrade", str(source), "--out", str(out), "--noise-snr", "5", "--quiet"]) == 2  # not empty
    assert main(["data", "degrade", str(source), "--out", str(tmp_path / "none"), "--quiet"]) == 2  # nothing asked
    assert main(["data", "degrade", str(source), "--out", str(tmp_path / "x"), "--band", "fm", "--quiet"]) == 2
    assert "nothing to degrade" in capsys.readouterr().err
