"""The extraction loop end to end on a tiny random Whisper encoder and generated tones."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import subnet
from subnet.training.extract import extract
from subnet.training.pipeline import load_pipeline
from subnet.training.loop import ExtractConfig

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_extract_end_to_end(tones, tiny_whisper, tmp_path):
    cfg = ExtractConfig(steps=60, batch_size=6, eval_every=20, loss="budget", t=0.5, lr_head=3e-3, align=4)
    m = extract(str(tiny_whisper), tones / "train", tones / "valid", tones / "test", cfg, tmp_path,
                max_seconds=1.0, progress=False)
    for f in ("model.safetensors", "subnet.json", "head.safetensors", "metrics.json", "log.jsonl", "best.pt"):
        assert (tmp_path / f).is_file(), f
    assert m["metric"] == "accuracy" and m["eval_clips"] == 18
    assert m["compact"] == pytest.approx(m["masked"], abs=1e-6)  # same predictions
    assert m["params"]["compact"] < m["params"]["full"]
    assert min(m["kept_fraction"].values()) < 1
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 61)) and "valid" in log[19]

    groups = json.loads((tmp_path / "subnet.json").read_text())["groups"]
    assert all(len(g["keep"]) % 4 == 0 for g in groups.values() if g["kind"] in ("conv", "ffn"))

    pipe = load_pipeline(tmp_path)
    assert type(pipe.encoder).__name__ == "WhisperEncoder"
    res = subprocess.run([sys.executable, "-m", "subnet.cli", "evaluate", str(tmp_path), "--data",
                          str(tones / "test"), "--json", str(tmp_path / "eval.json"), "--max-seconds", "1"],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 0, res.stderr
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["metric"] == "accuracy" and ev["clips"] == 18
    assert ev["value"] == pytest.approx(m["compact"], abs=1e-6)
    res = subprocess.run([sys.executable, "-m", "subnet.cli", "predict", str(tmp_path),
                          str(tones / "test" / "low" / "1.wav")], capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 0 and res.stdout.split("\t")[1] in ("low", "mid", "high")


@pytest.mark.slow
def test_budget_reaches_its_target(tones, tiny_whisper, tmp_path):
    cfg = ExtractConfig(steps=150, batch_size=6, eval_every=50, loss="budget", t=0.4, lam=2.0)
    m = extract(str(tiny_whisper), tones / "train", tones / "valid", None, cfg, tmp_path, max_seconds=1.0,
                progress=False, measure_latency=False)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert abs(log[-1]["kept"] - 0.4) < 0.08, log[-1]["kept"]


def _cli_extract(tiny_whisper, tones, out, *extra, steps=40):
    return [sys.executable, "-m", "subnet.cli", "extract", "--backbone", str(tiny_whisper),
            "--train", str(tones / "train"), "--valid", str(tones / "valid"), "--steps", str(steps),
            "--batch-size", "6", "--eval-every", "10", "--checkpoint-every", "2", "--max-seconds", "1",
            "--no-latency", "--quiet", "--out", str(out), *extra]


@pytest.mark.parametrize("extra", [(), ("--freeze-dead", "3", "-t", "0.3", "--lambda", "4"),
                                   ("--settle", "0.6", "-t", "0.3", "--lambda", "4")])
@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tones, tiny_whisper, tmp_path, extra):
    ref = tmp_path / "ref"
    subprocess.run(_cli_extract(tiny_whisper, tones, ref, *extra), check=True, env=ENV, timeout=600,
                   capture_output=True)
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli_extract(tiny_whisper, tones, run, *extra), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill it mid-way, once a few checkpoints exist
        log = run / "log.jsonl"
        if log.is_file() and len(log.read_text().splitlines()) >= 15:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len((run / "log.jsonl").read_text().splitlines())
    assert done < 40, "the run finished before it could be killed"
    subprocess.run(_cli_extract(tiny_whisper, tones, run, "--resume", *extra), check=True, env=ENV, timeout=600,
                   capture_output=True)
    a = torch.load(ref / "checkpoint.pt", weights_only=True)
    b = torch.load(run / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 40
    for x, y in zip(a["logits"] + a["frozen"] + a["dead_steps"], b["logits"] + b["frozen"] + b["dead_steps"]):
        assert torch.equal(x, y)
    if extra:  # units were frozen mid-run, before the kill; the checkpoint names the copy that ran
        assert sum(int(f.sum()) for f in a["frozen"]) > 0
        assert all(torch.equal(x, y) for x, y in zip(a["live_build"], b["live_build"]))
    for k in a["head"]:
        assert torch.equal(a["head"][k], b["head"][k]), k


@pytest.mark.slow
def test_two_processes_equal_one_with_double_batch(tones, tiny_whisper, tmp_path):
    one = tmp_path / "one"
    cmd = _cli_extract(tiny_whisper, tones, one, "--head-dropout", "0", steps=12)
    cmd[cmd.index("--batch-size") + 1] = "6"
    subprocess.run(cmd, check=True, env=ENV, timeout=600, capture_output=True)
    two = tmp_path / "two"
    cmd = _cli_extract(tiny_whisper, tones, two, "--head-dropout", "0", steps=12)
    cmd[cmd.index("--batch-size") + 1] = "3"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
                "-m", "subnet.cli"] + cmd[3:]
    res = subprocess.run(torchrun, env={**ENV, "OMP_NUM_THREADS": "1"}, timeout=600, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    a = torch.load(one / "checkpoint.pt", weights_only=True)
    b = torch.load(two / "checkpoint.pt", weights_only=True)
    for x, y in zip(a["logits"], b["logits"]):
        assert torch.allclose(x, y, atol=1e-4), (x - y).abs().max()
    for k in a["head"]:
        assert torch.allclose(a["head"][k], b["head"][k], atol=1e-4), k


def test_bad_input_is_reported_before_training(tones, tiny_whisper, tmp_path):
    manifest = tmp_path / "m.jsonl"
    good = sorted((tones / "train" / "low").glob("*.wav"))[:3]
    lines = [json.dumps({"path": str(p), "label": "low"}) for p in good]
    lines.append(json.dumps({"path": str(tmp_path / "missing.wav"), "label": "high"}))
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(Exception, match="missing.wav"):
        extract(str(tiny_whisper), manifest, tones / "valid", None, ExtractConfig(steps=2), tmp_path / "o",
                max_seconds=1.0, progress=False)


def test_public_api_names_survive_internal_imports():
    import subnet.training.extract  # noqa: F401  (what the CLI and sweep import)
    import subnet.training.pipeline  # noqa: F401
    assert callable(subnet.extract) and callable(subnet.load_pipeline)


def test_freeze_dead_stops_computing_dead_units(tones, tiny_whisper, tmp_path):
    from subnet.training.extract import prepare_backbone, setup_run
    from subnet.training.loop import run_loop
    runs = {}
    for k in (0, 4, 1000):  # 1000 > steps: never freezes, so the same run as without
        cfg = ExtractConfig(steps=40, batch_size=6, eval_every=20, loss="budget", t=0.3, lam=4.0, warmup=0.0,
                            freeze_dead=k)
        bb = prepare_backbone(subnet.load_backbone(str(tiny_whisper)), 1.0)
        run = setup_run(bb, tones / "train", tones / "valid", None, cfg, tmp_path / str(k), 1.0, progress=False)
        run_loop(run.ex, run.steps, run.valid, run.log, progress=False)
        runs[k] = run.ex
    assert all(torch.equal(a, b) for a, b in zip(runs[0].masked.logits, runs[1000].masked.logits))
    mm = runs[4].masked
    frozen = [getattr(mm, f"frozen_{i}") for i in range(len(mm.logits))]
    assert sum(int(f.sum()) for f in frozen) > 0
    keep = mm.keep()
    assert all(not keep[n][f].any() for n, f in zip(mm.groups, frozen))  # frozen units are removed units
    live = mm.runner()  # the forward pass runs a copy without the frozen units
    assert sum(p.numel() for p in live.parameters()) < sum(p.numel() for p in mm.backbone.parameters())
    small = subnet.compact(mm)  # compaction (verified against the masked model) is unaffected
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in live.parameters()) + 1


def test_settle_fixes_the_gates_and_trains_only_the_head(tones, tiny_whisper, tmp_path):
    """--settle F: over the last F of the steps every gate stays where it was (the units off
    then are frozen, so no longer computed), the logits get no gradient (no backward pass
    through the encoder), and the head goes on training."""
    from subnet.training.extract import prepare_backbone, setup_run
    from subnet.training.loop import run_loop
    cfg = ExtractConfig(steps=24, batch_size=6, eval_every=8, loss="budget", t=0.3, lam=4.0, warmup=0.0, settle=0.25)
    bb = prepare_backbone(subnet.load_backbone(str(tiny_whisper)), 1.0)
    run = setup_run(bb, tones / "train", tones / "valid", None, cfg, tmp_path, 1.0, progress=False)
    ex, seen = run.ex, []
    step = ex.step

    def recorded(batch):
        rec = step(batch)
        seen.append(([m.detach().clone() for m in ex.masked.logits], [m.grad is None for m in ex.masked.logits],
                     [p.detach().clone() for p in ex.head.parameters()], ex.masked.keep()))
        return rec
    ex.step = recorded
    run_loop(ex, run.steps, run.valid, run.log, progress=False)
    start = cfg.steps - 6  # the first settled step is step `start` + 1
    logits, no_grad, head, keep = zip(*seen)
    assert not all(torch.equal(a, b) for a, b in zip(logits[start - 2], logits[start - 1]))  # still training
    for s in range(start, cfg.steps):
        assert all(torch.equal(a, b) for a, b in zip(logits[start - 1], logits[s]))
        assert all(no_grad[s]) and not any(no_grad[start - 1])
        assert all(torch.equal(keep[start - 1][n], keep[s][n]) for n in keep[s])
        assert not all(torch.equal(a, b) for a, b in zip(head[s - 1], head[s]))  # the head trains
    mm = ex.masked
    frozen = {n: getattr(mm, f"frozen_{i}") for i, n in enumerate(mm.groups)}
    assert sum(int(f.sum()) for f in frozen.values()) > 0
    assert all(torch.equal(frozen[n], ~keep[-1][n]) for n in frozen)  # every unit off is frozen
    assert sum(p.numel() for p in mm.runner().parameters()) < sum(p.numel() for p in mm.backbone.parameters())


def test_layers_above_the_heads_layer_are_dropped(tones, tiny_whisper, tmp_path):
    from subnet.training.extract import drop_unread_layers, prepare_backbone
    from subnet.training.pipeline import load_pipeline
    full = prepare_backbone(subnet.load_backbone(str(tiny_whisper)), 1.0)
    cut, layer = drop_unread_layers(full, -2)  # 2 layers -> 3 states; -2 is the first layer's output
    assert layer == 1 and len(cut.layers) == 1 and len(full.layers) == 2
    x = {"input_features": torch.randn(2, 80, 100)}
    with torch.no_grad():
        want = full(**x, output_hidden_states=True).hidden_states[1]
        got = cut(**x, output_hidden_states=True).hidden_states
    assert len(got) == 2 and torch.equal(got[-1], want)
    assert drop_unread_layers(full, "weighted")[0] is full and drop_unread_layers(full, 2)[0] is full
    cfg = ExtractConfig(steps=10, batch_size=6, eval_every=5, layer=1, t=0.6)
    m = extract(str(tiny_whisper), tones / "train", tones / "valid", tones / "test", cfg, tmp_path, max_seconds=1.0,
                progress=False, measure_latency=False)
    assert m["params"]["full"] == sum(p.numel() for p in cut.parameters())
    pipe = load_pipeline(tmp_path)  # rebuilt from subnet.json: one layer, no final norm
    assert len(pipe.encoder.layers) == 1 and isinstance(pipe.encoder.layer_norm, torch.nn.Identity)
    assert json.loads((tmp_path / "config.json").read_text())["layer"] == 1
    assert abs(m["compact"] - m["masked"]) < 1e-9


def test_bf16_autocast_and_device_options(tones, tiny_whisper, tmp_path):
    cfg = ExtractConfig(steps=8, batch_size=6, eval_every=4, t=0.3, lam=4.0, lr_gates=0.3, warmup=0.0,
                        dtype="bf16", device="cpu")
    m = extract(str(tiny_whisper), tones / "train", tones / "valid", tones / "test", cfg, tmp_path,
                max_seconds=1.0, progress=False, measure_latency=False)
    assert 0 <= m["compact"] <= 1 and m["params"]["kept_fraction"] < 1.0
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in log)
    with pytest.raises(ValueError, match="dtype"):
        extract(str(tiny_whisper), tones / "train", tones / "valid", None, ExtractConfig(steps=1, dtype="fp16"),
                tmp_path / "bad", max_seconds=1.0, progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            extract(str(tiny_whisper), tones / "train", tones / "valid", None, ExtractConfig(steps=1, device="cuda"),
                    tmp_path / "bad2", max_seconds=1.0, progress=False)


def test_extract_on_device(tones, tiny_whisper, tmp_path):
    """Training on the accelerator in bf16 (on a CPU-only machine: the CPU); the artifact is
    written from CPU tensors and reloads on the CPU with the same predictions."""
    from subnet.training.pipeline import load_pipeline
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = ExtractConfig(steps=6, batch_size=6, eval_every=3, t=0.5, device=device, dtype="bf16")
    m = extract(str(tiny_whisper), tones / "train", tones / "valid", tones / "test", cfg, tmp_path,
                max_seconds=1.0, progress=False, measure_latency=True)
    assert np.isfinite(m["compact"]) and m["latency_batch1"]["compact"]["median_s"] > 0
    pipe = load_pipeline(tmp_path)
    assert all(p.device.type == "cpu" for p in pipe.parameters())


@pytest.mark.slow
def test_compiled_encoder_trains_like_eager(tones, tiny_whisper, tmp_path):
    """--compile changes nothing but speed: the same losses, gates and test metric as eager
    (up to float reassociation in fused kernels), freeze-dead recompiles included."""
    from torch._dynamo.utils import counters
    runs = {}
    counters.clear()
    for mode in ("", "default"):
        cfg = ExtractConfig(steps=8, batch_size=6, eval_every=4, t=0.3, lam=2.0, lr_gates=0.3, warmup=0.0,
                            freeze_dead=2, compile=mode)
        out = tmp_path / (mode or "eager")
        m = extract(str(tiny_whisper), tones / "train", tones / "valid", tones / "test", cfg, out,
                    max_seconds=1.0, progress=False, measure_latency=False)
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        runs[mode] = (m, log)
    (m_e, log_e), (m_c, log_c) = runs[""], runs["default"]
    assert [r["kept"] for r in log_e] == [r["kept"] for r in log_c]  # the same gate decisions, every step
    assert log_e[-1]["kept"] < 1.0  # units were frozen along the way
    np.testing.assert_allclose([r["loss"] for r in log_c], [r["loss"] for r in log_e], rtol=1e-4)
    assert m_c["compact"] == m_e["compact"] and m_c["params"] == m_e["params"]
    assert counters["stats"]["unique_graphs"] > 0  # it was compiled, not silently run eagerly


def test_unknown_compile_mode_is_refused(tiny_whisper, tmp_path):
    from subnet.training.loop import Extractor
    with pytest.raises(ValueError, match="compile must be"):
        Extractor(subnet.load_backbone(str(tiny_whisper)), 3, ExtractConfig(compile="fast"), tmp_path)
    for settle in (1.0, -0.1):  # all steps settled would train no gate at all
        with pytest.raises(ValueError, match=r"settle .* in \[0, 1\)"):
            Extractor(subnet.load_backbone(str(tiny_whisper)), 3, ExtractConfig(settle=settle), tmp_path)


def test_prefetched_batches_are_the_same_batches():
    from subnet.training.loop import Prefetched
    import threading
    calls = []

    def fn(step):
        calls.append((step, threading.current_thread().name))
        return step * 10
    with Prefetched(fn, last=5) as batches:
        got = [batches(s) for s in range(6)] + [batches(2)]  # a jump back recomputes
    assert got == [0, 10, 20, 30, 40, 50, 20]
    assert [c[0] for c in calls] == [0, 1, 2, 3, 4, 5, 2, 3]  # in order, one step ahead, never past `last`
    assert all(name.startswith("subnet-batches") for _, name in calls)


def test_whole_run_variants_differ_only_as_named():
    """benchmarks/whole_run.py: paper-style and subnet run without --freeze-dead and --settle
    even though the protocol's extraction config has them; each later variant adds one."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from whole_run import make_variants
    cfg = ExtractConfig(steps=40, freeze_dead=10, settle=0.2, t=0.45)
    v = make_variants(cfg, 7, 0.3)
    assert list(v) == ["paper-style", "subnet", "subnet --freeze-dead 7", "subnet --freeze-dead 7 --settle 0.3"]
    assert all((c.freeze_dead, c.settle) == (0, 0.0) for c in (v["paper-style"], v["subnet"]))
    assert (v["subnet --freeze-dead 7"].freeze_dead, v["subnet --freeze-dead 7"].settle) == (7, 0.0)
    last = v["subnet --freeze-dead 7 --settle 0.3"]
    assert (last.freeze_dead, last.settle) == (7, 0.3)
    assert all(replace(c, freeze_dead=0, settle=0.0) == v["subnet"] for c in v.values())


@pytest.mark.slow
def test_runs_in_lockstep_end_as_runs_alone(tones, tiny_whisper, tmp_path):
    """benchmarks/whole_run.py advances several runs one `loop_step` each in turn on a shared
    batch: each ends exactly as it would alone (`run_loop`), so the timed runs are real ones."""
    from subnet.training.extract import prepare_backbone, setup_run
    from subnet.training.loop import run_loop
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from whole_run import lockstep, setups
    base = ExtractConfig(steps=12, batch_size=6, eval_every=5, loss="budget", t=0.3, lam=4.0, warmup=0.0)
    cfgs = {"plain": base, "freeze-dead": ExtractConfig(**{**base.__dict__, "freeze_dead": 2})}

    def setup(name, out):
        bb = prepare_backbone(subnet.load_backbone(str(tiny_whisper)), 1.0)
        return setup_run(bb, tones / "train", tones / "valid", None, cfgs[name], out, 1.0, progress=False)

    alone = {}
    for n in cfgs:
        alone[n] = run = setup(n, tmp_path / "alone" / n)
        run_loop(run.ex, run.steps, run.valid, run.log, progress=False)
    together, rng = setups(lambda n: setup(n, tmp_path / "lockstep" / n), cfgs)
    seconds = lockstep(together, rng, base.steps)
    assert set(seconds) == set(cfgs) and all(len(s) == base.steps and min(s) > 0 for s in seconds.values())
    for n in cfgs:
        a, b = alone[n].ex, together[n].ex
        assert a.state.step == b.state.step == base.steps
        assert (a.state.best_step, a.state.best_metric) == (b.state.best_step, b.state.best_metric)
        assert all(torch.equal(x, y) for x, y in zip(a.masked.logits, b.masked.logits))
        assert all(torch.equal(x, y) for x, y in zip(a.head.state_dict().values(), b.head.state_dict().values()))
    assert any(int(getattr(together["freeze-dead"].ex.masked, f"frozen_{i}").sum()) for i in range(3))
