"""Extraction options for robustness outside the training domain: augmented training batches,
distillation from the full encoder, extra (named) test sets in metrics.json."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import subnet
from subnet.cli.options import split_tests
from subnet.data.augment import DEFAULT_SPEC, DEFAULTS, parse_augment
from subnet.data.dataset import AudioDataset
from subnet.training.extract import StepBatches, extract
from subnet.training.loop import ExtractConfig, Extractor
from subnet.training.tasks import task_named

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")])}


def _batches(tones, augment: str, **kw) -> StepBatches:
    ds = AudioDataset.from_source(str(tones / "train"), sample_rate=16000, max_seconds=1.0, train=True, seed=3,
                                  progress=False)
    task = task_named("classify")
    return StepBatches(ds, 4, task, task.labels(ds), augment=augment, **kw)


def test_default_spec_is_the_defaults():
    assert parse_augment(DEFAULT_SPEC) == DEFAULTS


def test_augmented_batches_are_a_pure_function_of_seed_and_step(tones):
    plain, a, b = _batches(tones, ""), _batches(tones, "noise=1,snr=0:5"), _batches(tones, "noise=1,snr=0:5")
    for step in (0, 1, 7):
        x, y, z = plain(step), a(step), b(step)
        assert torch.equal(y.waves, z.waves) and torch.equal(y.lengths, z.lengths)  # same (seed, step): same batch
        assert torch.equal(y.targets, x.targets) and torch.equal(y.lengths, x.lengths)
        assert not torch.allclose(y.waves, x.waves)  # noise at <= 5 dB SNR changed every clip
        pad = torch.arange(x.waves.shape[1]) >= x.lengths[:, None]
        assert torch.all(y.waves[pad] == 0)  # padding stays padding
    # a resumed run (a fresh StepBatches asked for step 7 first) sees the batch an uninterrupted run saw
    assert torch.equal(_batches(tones, "noise=1,snr=0:5")(7).waves, a(7).waves)


def _extractor(tiny_whisper, tmp_path, **kw) -> Extractor:
    cfg = ExtractConfig(steps=4, batch_size=4, eval_every=2, **kw)
    backbone = subnet.load_backbone(str(tiny_whisper))
    return Extractor(backbone, 3, cfg, tmp_path)


def test_teacher_is_the_full_encoder(tiny_whisper, tmp_path):
    ex = _extractor(tiny_whisper, tmp_path, distill=1.0)
    mm = ex.masked
    gen = torch.Generator().manual_seed(0)
    keep = {n: torch.rand(g.size, generator=gen) < 0.5 for n, g in mm.groups.items()}
    for k in keep.values():
        k[0] = True
    mm.set_keep(keep)
    waves = torch.randn(2, 16000, generator=gen) * 0.1
    lengths = torch.tensor([16000, 11000])
    with torch.no_grad():
        teacher = ex.pipeline.teacher_states(waves, lengths)
        _, _, student = ex.pipeline.run(waves, lengths)
        with mm.gates_removed() as full:
            bare = mm.family.states(full, ex.front_end.inputs(waves, lengths))
    assert len(teacher) == len(bare) == len(student)
    for t, b in zip(teacher, bare):
        # gates of 1 change nothing but the kernels' rounding (the gated attention path)
        torch.testing.assert_close(t, b, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(teacher[-1], student[-1], atol=1e-3)  # the gated encoder differs


@pytest.mark.parametrize("layers, loss", [("mix", "mse"), ("all", "l1cos"), ("1,2", "mse")])
def test_distillation_reaches_the_gates(tiny_whisper, tones, tmp_path, layers, loss):
    """With units gated off, the distillation term is positive and changes the gates' gradient."""
    batch = _batches(tones, "")(0)
    grads = {}
    for w in (0.0, 5.0):
        ex = _extractor(tiny_whisper, tmp_path / f"w{w}", distill=w, lr_gates=0.0, lr_head=0.0,
                        distill_layers=layers, distill_loss=loss)
        mm = ex.masked
        with torch.no_grad():
            for i, m in enumerate(mm.logits):
                m[::2] = -0.5  # every other unit off, still trainable (no freezing)
        if w and layers == "all":
            assert ex.distill_layers == list(range(3))  # the tiny encoder's 3 hidden states
        rec = ex.step(batch)
        grads[w] = torch.cat([m.grad.flatten() for m in mm.logits])
        if w:
            assert rec["distill"] > 0
        else:
            assert "distill" not in rec
    assert not torch.allclose(grads[0.0], grads[5.0])


@pytest.mark.parametrize("kw, words", [
    ({"distill": 1.0, "train_gates": False}, "needs gates"),
    ({"distill": -1.0}, ">= 0"),
    ({"distill_loss": "l2"}, "distill_loss"),
    ({"distill": 1.0, "distill_layers": "0,9"}, "hidden states"),
    ({"distill": 1.0, "distill_layers": "a,b"}, "comma-separated"),
    ({"distill": 1.0, "distill_layers": "every"}, "'all'"),
    ({"augment": "noise=2"}, "noise"),
    ({"augment": "loud=1"}, "unknown key"),
])
def test_bad_options_fail_before_training(tiny_whisper, tmp_path, kw, words):
    with pytest.raises(ValueError, match=words):
        _extractor(tiny_whisper, tmp_path, **kw)


def test_split_tests(tmp_path):
    assert split_tests(None) == (None, {})
    assert split_tests(["a/m.jsonl@test", "real=b.jsonl", "noisy=c@test"]) == (
        "a/m.jsonl@test", {"real": "b.jsonl", "noisy": "c@test"})
    odd = tmp_path / "x=y"  # an existing path with "=" in it is a path, not a name
    odd.mkdir()
    assert split_tests([str(odd)]) == (str(odd), {})
    with pytest.raises(SystemExit, match="two unnamed"):
        split_tests(["a", "b"])
    with pytest.raises(SystemExit, match="two test sets named 'r'"):
        split_tests(["r=a", "r=b"])


@pytest.mark.slow
def test_extra_tests_reported_and_options_run_end_to_end(tones, tiny_whisper, tmp_path):
    cfg = ExtractConfig(steps=8, batch_size=6, eval_every=4, t=0.4, lam=2.0, lr_gates=0.3, warmup=0.0,
                        distill=1.0, augment="noise=0.5,reverb=0.5")
    out = tmp_path / "run"
    m = extract(str(tiny_whisper), tones / "train", tones / "valid", tones / "test", cfg, out, max_seconds=1.0,
                progress=False, measure_latency=False, extra_tests={"same": tones / "test", "valid": tones / "valid"})
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["extra"] == m["extra"]
    assert m["extra"]["same"]["value"] == pytest.approx(m["compact"], abs=1e-6)  # the test set again
    assert m["extra"]["same"]["clips"] == m["eval_clips"] and m["extra"]["valid"]["clips"] == 18
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all("distill" in r for r in log)  # gates train on every step (no settling)
    assert json.loads((out / "config.json").read_text())["augment"] == "noise=0.5,reverb=0.5"

    # subnet evaluate: several named sets, recorded into metrics.json
    res = subprocess.run([sys.executable, "-m", "subnet.cli", "evaluate", str(out), "--data", f"a={tones / 'test'}",
                          "--data", f"b={tones / 'valid'}", "--max-seconds", "1", "--record", "--json",
                          str(tmp_path / "e.json")], capture_output=True, text=True, timeout=300,
                         env=ENV)
    assert res.returncode == 0, res.stderr
    e = json.loads((tmp_path / "e.json").read_text())
    assert set(e) == {"a", "b"} and e["a"]["value"] == pytest.approx(m["compact"], abs=1e-6)
    assert set(json.loads((out / "metrics.json").read_text())["extra"]) == {"same", "valid", "a", "b"}


# --- prediction distillation from a probe (--teacher, --kd) --------------------------------------
@pytest.fixture(scope="module")
def probe_of_tiny_whisper(tiny_whisper, tones, tmp_path_factory):
    """A probe (head on the full encoder) of the tiny encoder, 1-s clips: the --kd teacher."""
    out = tmp_path_factory.mktemp("probe")
    cfg = ExtractConfig(steps=6, batch_size=6, eval_every=3, train_gates=False)
    extract(str(tiny_whisper), tones / "train", tones / "valid", None, cfg, out, max_seconds=1.0, progress=False,
            measure_latency=False)
    return out


def _tone_labels(tones) -> list[str]:
    ds = AudioDataset.from_source(str(tones / "train"), sample_rate=16000, max_seconds=1.0, progress=False)
    return task_named("classify").labels(ds)


def _kd_extractor(tiny_whisper, tones, tmp_path, teacher, **kw) -> Extractor:
    from subnet.training.extract import prepare_backbone
    labels = _tone_labels(tones)
    cfg = ExtractConfig(steps=4, batch_size=4, eval_every=2, teacher=str(teacher), **kw)
    backbone = prepare_backbone(subnet.load_backbone(str(tiny_whisper)), 1.0)
    return Extractor(backbone, len(labels), cfg, tmp_path, labels=labels)


def test_kd_teacher_is_the_probe_and_reaches_the_gates(tiny_whisper, tones, tmp_path, probe_of_tiny_whisper):
    from subnet.training.pipeline import load_pipeline
    batch = _batches(tones, "")(0)
    grads = {}
    for w in (0.0, 3.0):
        ex = _kd_extractor(tiny_whisper, tones, tmp_path / f"w{w}", probe_of_tiny_whisper, kd=w, lr_gates=0.0,
                           lr_head=0.0)
        if w:
            # the teacher head on the full encoder's states is the probe artifact's prediction
            probe = load_pipeline(probe_of_tiny_whisper)
            with torch.no_grad():
                want, frames = probe(batch.waves, batch.lengths)
                got = ex.teacher_head(ex.pipeline.teacher_states(batch.waves, batch.lengths), frames)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        with torch.no_grad():
            for m in ex.masked.logits:
                m[::2] = -0.5  # every other unit off, still trainable
        rec = ex.step(batch)
        grads[w] = torch.cat([m.grad.flatten() for m in ex.masked.logits])
        assert (rec["kd"] > 0) if w else ("kd" not in rec)
    assert not torch.allclose(grads[0.0], grads[3.0])


def test_kd_bad_teachers_fail_before_training(tiny_whisper, tones, tmp_path, probe_of_tiny_whisper):
    with pytest.raises(ValueError, match="give teacher"):
        _extractor(tiny_whisper, tmp_path, kd=1.0)
    with pytest.raises(ValueError, match="kd_temperature"):
        _kd_extractor(tiny_whisper, tones, tmp_path, probe_of_tiny_whisper, kd=1.0, kd_temperature=0.0)
    with pytest.raises(ValueError, match="teacher: .*subnet.json: not found"):
        _kd_extractor(tiny_whisper, tones, tmp_path, tmp_path, kd=1.0)  # no artifact there
    # another clip length: Whisper's positional table differs, so do the base weights
    from subnet.training.extract import prepare_backbone
    labels = _tone_labels(tones)
    cfg = ExtractConfig(steps=4, batch_size=4, teacher=str(probe_of_tiny_whisper), kd=1.0)
    shorter = prepare_backbone(subnet.load_backbone(str(tiny_whisper)), 0.5)
    with pytest.raises(ValueError, match="other base weights"):
        Extractor(shorter, len(labels), cfg, tmp_path, labels=labels)
    same = prepare_backbone(subnet.load_backbone(str(tiny_whisper)), 1.0)
    with pytest.raises(ValueError, match="labels"):  # the probe's outputs in another order
        Extractor(same, len(labels), cfg, tmp_path, labels=labels[::-1])


def test_kd_without_a_teacher_trains_the_probe_first(tiny_whisper, tones, tmp_path):
    cfg = ExtractConfig(steps=4, batch_size=6, eval_every=2, t=0.5, lr_gates=0.3, warmup=0.0, kd=1.0, settle=0.25)
    out = tmp_path / "run"
    extract(str(tiny_whisper), tones / "train", tones / "valid", None, cfg, out, max_seconds=1.0, progress=False,
            measure_latency=False)
    probe = json.loads((out / "teacher" / "config.json").read_text())
    assert probe["train_gates"] is False and probe["kd"] == 0.0 and probe["steps"] == 4 and probe["seed"] == 0
    assert json.loads((out / "config.json").read_text())["teacher"] == str(out / "teacher")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and all(r["kd"] >= 0 for r in log)  # the settling step too
    first = (out / "teacher" / "metrics.json").stat().st_mtime_ns
    extract(str(tiny_whisper), tones / "train", tones / "valid", None, cfg, out, max_seconds=1.0, progress=False,
            measure_latency=False)
    assert (out / "teacher" / "metrics.json").stat().st_mtime_ns == first  # a finished teacher is reused

    # a baseline on this extraction's units inherits its config but not its distillation (no gates to train)
    from subnet.training.baselines import reference_config, refit
    ref = reference_config(out)
    assert ref.kd == 1.0
    m = refit(str(tiny_whisper), out, tones / "train", tones / "valid", None, ref, out=tmp_path / "refit",
              max_seconds=1.0, progress=False, measure_latency=False)
    assert m["params"]["kept_fraction"] < 1.0
    assert json.loads((tmp_path / "refit" / "config.json").read_text())["kd"] == 0.0


# --- a clean-input teacher (--teacher-input clean) ---------------------------------------------
def test_a_clean_teacher_hears_the_clip_before_room_channel_and_noise(tones):
    plain, spec = _batches(tones, ""), "speed=1,factor=0.9:0.95,noise=1,snr=0:5,reverb=1"
    noisy, clean = _batches(tones, spec), _batches(tones, spec, clean_teacher=True)
    speed_only = _batches(tones, "speed=1,factor=0.9:0.95")
    for step in (0, 3):
        b = clean(step)
        assert torch.equal(b.waves, noisy(step).waves)  # the student's clips are drawn as without it
        assert b.teacher_waves.shape == b.waves.shape and not torch.allclose(b.teacher_waves, b.waves, atol=1e-3)
        assert not torch.equal(b.lengths, plain(step).lengths)  # slowed down: longer, for both of them
        # the teacher's clips: the same speed change (the same draws), no reverb and no noise
        torch.testing.assert_close(b.teacher_waves, speed_only(step).waves, rtol=0, atol=1e-6)
    # noise alone: the teacher hears exactly the clips as read
    b = _batches(tones, "noise=1,snr=0:5", clean_teacher=True)(2)
    assert torch.equal(b.teacher_waves, plain(2).waves)
    assert _batches(tones, "noise=1")(2).teacher_waves is None  # (the teacher hears the student's clips)


def test_a_clean_teacher_distils_the_full_encoder_on_the_clean_clips(tiny_whisper, tones, tmp_path):
    batch = _batches(tones, "noise=1,snr=0:5", clean_teacher=True)(0)
    ex = _extractor(tiny_whisper, tmp_path, distill=1.0, augment="noise=1,snr=0:5", teacher_input="clean")
    with torch.no_grad():
        want = ex.pipeline.teacher_states(batch.teacher_waves, batch.lengths)
        noisy = ex.pipeline.teacher_states(batch.waves, batch.lengths)
        got = ex._teacher_states(batch)
        assert ex.teacher_cache.misses == 4 and ex.teacher_cache.hits == 0
        again = ex._teacher_states(batch)  # the clean clips are the same every epoch: cached
        assert ex.teacher_cache.hits == 4
    for g, a, w, n in zip(got, again, want, noisy):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
        assert torch.equal(g, a)
    assert not torch.allclose(got[-1], noisy[-1], atol=1e-3)
    # the same batch with the teacher hearing the noisy clips: another distillation loss
    with torch.no_grad():
        for m in ex.masked.logits:
            m[::2] = -0.5
    same = _extractor(tiny_whisper, tmp_path / "same", distill=1.0, augment="noise=1,snr=0:5")
    with torch.no_grad():
        for m in same.masked.logits:
            m[::2] = -0.5
    assert same.teacher_cache is None  # (augmented input is new every step)
    rec_clean, rec_same = ex.step(batch), same.step(batch)
    assert rec_clean["distill"] > 0 and rec_clean["distill"] != pytest.approx(rec_same["distill"], rel=1e-3)


@pytest.mark.parametrize("kw, words", [
    ({"distill": 1.0, "teacher_input": "clean"}, "needs augment"),  # nothing to take it from
    ({"augment": "noise=1", "teacher_input": "clean"}, "needs augment and distill or kd"),  # no teacher
    ({"distill": 1.0, "augment": "noise=1", "teacher_input": "quiet"}, "teacher_input must be one of"),
])
def test_bad_teacher_inputs_fail_before_training(tiny_whisper, tmp_path, kw, words):
    with pytest.raises(ValueError, match=words):
        _extractor(tiny_whisper, tmp_path, **kw)


def test_kd_with_a_clean_teacher_trains_end_to_end(tiny_whisper, tones, tmp_path, probe_of_tiny_whisper):
    cfg = ExtractConfig(steps=4, batch_size=6, eval_every=2, t=0.5, lr_gates=0.3, warmup=0.0, kd=1.0,
                        teacher=str(probe_of_tiny_whisper), augment="noise=1,snr=0:5", teacher_input="clean")
    out = tmp_path / "run"
    m = extract(str(tiny_whisper), tones / "train", tones / "valid", None, cfg, out, max_seconds=1.0,
                progress=False, measure_latency=False)
    assert 0 <= m["compact"] <= 1
    assert json.loads((out / "config.json").read_text())["teacher_input"] == "clean"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and all(r["kd"] > 0 for r in log)
    # a baseline on its units drops the teacher's input with the distillation (nothing to distil)
    from subnet.training.baselines import reference_config, refit
    refit(str(tiny_whisper), out, tones / "train", tones / "valid", None, reference_config(out),
          out=tmp_path / "refit", max_seconds=1.0, progress=False, measure_latency=False)
    assert json.loads((tmp_path / "refit" / "config.json").read_text())["teacher_input"] == "same"


# --- distillation on clips without labels (--unlabeled) ------------------------------------------
def test_unlabeled_clips_enter_the_distillation_losses(tiny_whisper, tones, tmp_path):
    from subnet.training.extract import EpochBatches
    u_ds = AudioDataset.from_source(str(tones / "valid"), sample_rate=16000, max_seconds=1.0, progress=False)
    unlabeled = EpochBatches(u_ds, 4)
    batch = _batches(tones, "", unlabeled=unlabeled)(0)
    assert torch.equal(batch.unlabeled[0], unlabeled.raw(0)["waves"])
    assert torch.equal(batch.waves, _batches(tones, "")(0).waves)  # the labelled stream is unchanged
    grads, recs = {}, {}
    for name in ("without", "with"):
        ex = _extractor(tiny_whisper, tmp_path / name, distill=2.0, lr_gates=0.0, lr_head=0.0,
                        unlabeled=str(tones / "valid") if name == "with" else "")
        with torch.no_grad():
            for m in ex.masked.logits:
                m[::2] = -0.5  # every other unit off, still trainable
        b = batch if name == "with" else _batches(tones, "")(0)
        recs[name] = ex.step(b)
        grads[name] = torch.cat([m.grad.flatten() for m in ex.masked.logits])
    assert "unlabeled" not in recs["without"] and recs["with"]["unlabeled"] > 0
    assert recs["with"]["distill"] == pytest.approx(recs["without"]["distill"], rel=1e-5)  # same labelled batch
    assert not torch.allclose(grads["with"], grads["without"])  # the unlabeled clips reach the gates
    # the loss is distill x the distance on the unlabeled batch, against the full encoder's states
    with torch.no_grad():
        _, frames, states = ex.pipeline.run(*batch.unlabeled)
        want = 2.0 * ex._distill(states, ex.pipeline.teacher_states(*batch.unlabeled), frames)
    assert recs["with"]["unlabeled"] == pytest.approx(float(want), rel=1e-4)
    # centre-cropped clips are the same every epoch: the teacher's states come from the cache
    assert ex.unlabeled_cache.misses == 4 and ex.unlabeled_cache.hits == 0
    ex.step(batch)
    assert ex.unlabeled_cache.hits == 4
    with pytest.raises(ValueError, match="only enter the distillation losses"):
        _extractor(tiny_whisper, tmp_path / "bad", unlabeled=str(tones / "valid"))


def test_kd_on_unlabeled_clips_trains_end_to_end(tiny_whisper, tones, tmp_path, probe_of_tiny_whisper):
    cfg = ExtractConfig(steps=4, batch_size=6, eval_every=2, t=0.5, lr_gates=0.3, warmup=0.0, kd=1.0,
                        teacher=str(probe_of_tiny_whisper), unlabeled=str(tones / "valid"), settle=0.25)
    out = tmp_path / "run"
    extract(str(tiny_whisper), tones / "train", tones / "valid", None, cfg, out, max_seconds=1.0,
            progress=False, measure_latency=False)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and all(r["unlabeled"] > 0 for r in log)  # kd goes on through the settling step
    from subnet.training.baselines import reference_config, refit
    refit(str(tiny_whisper), out, tones / "train", tones / "valid", None, reference_config(out),
          out=tmp_path / "refit", max_seconds=1.0, progress=False, measure_latency=False)
    assert json.loads((tmp_path / "refit" / "config.json").read_text())["unlabeled"] == ""
    with pytest.raises(ValueError, match="fewer than one batch"):  # 18 unlabeled clips, batches of 24
        extract(str(tiny_whisper), tones / "train", tones / "valid", None,
                ExtractConfig(steps=2, batch_size=24, kd=1.0, teacher=str(probe_of_tiny_whisper),
                              unlabeled=str(tones / "valid")), tmp_path / "few", max_seconds=1.0, progress=False,
                measure_latency=False)
