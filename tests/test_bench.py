"""`subnet bench` (subnet.measure.bench): JSON fields, interleaving, the speedup verdict, inputs.

No absolute times are asserted: the timings of tiny models on a shared machine are noise."""
import json

import pytest
import torch

import subnet
from builders import build
from subnet.cli import main
from subnet.measure import bench, timing


def _artifact(kind, path):
    mm = subnet.attach_masks(build(kind))
    mm.set_keep({n: torch.arange(g.size) % 2 == 0 for n, g in mm.groups.items()})
    return subnet.save(subnet.compact(mm), path)


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    return _artifact("whisper", tmp_path_factory.mktemp("bench") / "whisper-half")


@pytest.fixture
def one_thread():
    """--threads 1 is process-wide: put torch's thread count back afterwards."""
    before = torch.get_num_threads()
    yield ["--threads", "1"]  # tiny models on a shared machine: one thread avoids OpenMP stalls
    torch.set_num_threads(before)


def _stats(median, p10, p90):
    return {"median_s": median, "p10_s": p10, "p90_s": p90}


# --- the verdict -----------------------------------------------------------------------------
def test_overlapping_spreads_are_no_speedup():
    c = timing.compare(_stats(1.0, 0.8, 1.3), _stats(1.1, 0.9, 1.4))
    assert c["speedup"] is None and c["verdict"] == timing.NO_DIFFERENCE
    assert c["latency_ratio"] == pytest.approx(1.1)  # the raw ratio stays in the JSON
    assert timing.verdict_text(c) == timing.NO_DIFFERENCE


def test_separated_spreads_give_a_speedup_or_a_slowdown():
    faster = timing.compare(_stats(1.0, 0.95, 1.05), _stats(2.0, 1.9, 2.1))
    assert faster["verdict"] == "faster" and faster["speedup"] == pytest.approx(2.0)
    lo, hi = faster["ratio_range"]
    assert lo == pytest.approx(1.9 / 1.05) and hi == pytest.approx(2.1 / 0.95)
    assert timing.verdict_text(faster).startswith("x2.00")
    slower = timing.compare(_stats(2.0, 1.9, 2.1), _stats(1.0, 0.95, 1.05))
    assert slower["verdict"] == "slower" and slower["speedup"] == pytest.approx(0.5)


def test_touching_spreads_are_no_speedup():
    # model p90 == baseline p10: the range reaches exactly 1.0
    c = timing.compare(_stats(1.0, 0.9, 1.2), _stats(1.5, 1.2, 1.6))
    assert c["speedup"] is None


def test_summarize():
    s = timing.summarize([float(i) for i in range(1, 12)], batch=4, seconds=2.0)
    assert s["median_s"] == 6.0 and s["p10_s"] == 2.0 and s["p90_s"] == 10.0 and s["n"] == 11
    assert s["clips_per_s"] == pytest.approx(4 / 6) and s["audio_s_per_s"] == pytest.approx(8 / 6)


# --- interleaving ------------------------------------------------------------------------------
def test_calls_are_interleaved_after_warmup():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    clock = iter(range(100))
    times = timing.interleaved_times(fns, repeats=4, warmup=2, timed=lambda fn: (fn(), next(clock))[1])
    assert calls == ["a", "b"] * 2 + ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert times == {"a": [0, 3, 4, 7], "b": [1, 2, 5, 6]}


# --- inputs ----------------------------------------------------------------------------------------
def test_inputs_through_the_front_end():
    gen = torch.Generator().manual_seed(0)
    w2v = build("wav2vec2")
    inputs, note = bench.make_inputs(w2v, subnet.family_of(w2v), 3, 0.25, gen)
    assert list(inputs["input_values"].shape) == [3, 4000] and note == ""
    whisper = build("whisper")
    enc = subnet.family_of(whisper).fit_seconds(whisper, 0.2)  # window 0.26 s -> 0.2 s
    inputs, _ = bench.make_inputs(enc, subnet.family_of(enc), 2, 0.2, gen)
    assert list(inputs["input_features"].shape) == [2, 16, 20]
    enc(**inputs)


def test_whisper_window_is_a_limit():
    enc = build("whisper")
    family = subnet.family_of(enc)
    with pytest.raises(ValueError, match="at most 0.26 s"):
        bench.make_inputs(family.fit_seconds(enc, 1.0), family, 1, 1.0, torch.Generator())


@pytest.mark.parametrize("kind", ["torch-batch", "torch-seq-prenorm"])
def test_inputs_of_a_feature_encoder(kind):
    """nn.TransformerEncoder takes features: a d_model-bin log-mel, 100 frames a second."""
    model = build(kind)
    inputs, note = bench.make_inputs(model, subnet.family_of(model), 3, 0.5, torch.Generator())
    shape = [3, 51, 40] if kind == "torch-batch" else [51, 3, 40]
    assert list(inputs["src"].shape) == shape and note == ""
    model(**inputs)


# --- the command --------------------------------------------------------------------------------
def test_compact_against_its_dense_base(whisper_dir, tmp_path, capsys, one_thread):
    out = tmp_path / "bench.json"
    assert main(["bench", str(whisper_dir), "--batch", "1,2", "--seconds", "0.2", "--repeats", "3",
                          "--warmup", "1", "--json", str(out), *one_thread]) == 0
    text = capsys.readouterr().out
    assert "compact" in text and "dense" in text
    report = json.loads(out.read_text())
    assert {"device", "torch", "threads", "dtype"} <= set(report["environment"])
    assert report["environment"]["threads"] == 1
    compact, dense = report["models"]["compact"], report["models"]["dense"]
    assert compact["kind"] == "compact" and dense["kind"] == "dense-base"
    assert compact["params"] < dense["params"] and compact["weight_bytes"] < dense["weight_bytes"]
    assert compact["file_bytes"] > 0 and dense["file_bytes"] is None
    assert [(r["batch"], r["seconds"]) for r in report["runs"]] == [(1, 0.2), (2, 0.2)]
    for run in report["runs"]:
        assert run["inputs"] == {"input_features": [run["batch"], 16, 20]}
        for k in ("compact", "dense"):
            r = run[k]
            assert r["p10_s"] <= r["median_s"] <= r["p90_s"] and r["n"] == 3 and len(r["times_s"]) == 3
            assert r["flops"] > 0 and r["clips_per_s"] > 0 and "added_bytes" in r["memory"]
        assert run["compact"]["flops"] < run["dense"]["flops"]
        c = run["comparison"]
        assert {"latency_ratio", "ratio_range", "speedup", "verdict", "ideal_speedup", "fraction_of_ideal"} <= set(c)
        assert c["ideal_speedup"] == pytest.approx(run["dense"]["flops"] / run["compact"]["flops"])
        assert (c["speedup"] is None) == (c["verdict"] == timing.NO_DIFFERENCE)


def test_vs_and_single_model(whisper_dir, tmp_path, one_thread):
    out = tmp_path / "vs.json"
    main(["bench", str(whisper_dir), "--vs", str(whisper_dir), "--batch", "1", "--seconds", "0.1",
                   "--repeats", "2", "--warmup", "0", "--no-memory", "--json", str(out), *one_thread])
    report = json.loads(out.read_text())
    assert list(report["models"]) == ["model", "baseline"]
    run = report["runs"][0]
    assert run["model"]["flops"] == run["baseline"]["flops"] and "memory" not in run["model"]
    enc_dir = tmp_path / "enc"
    build("whisper").save_pretrained(enc_dir)
    main(["bench", str(enc_dir), "--batch", "1", "--seconds", "0.1", "--repeats", "2", "--no-flops",
                   "--json", str(out), *one_thread])
    report = json.loads(out.read_text())
    assert list(report["models"]) == ["model"] and "comparison" not in report["runs"][0]
    assert report["models"]["model"]["file_bytes"] > 0


@pytest.mark.slow
def test_compiled_models(whisper_dir, tmp_path, one_thread):
    out = tmp_path / "compiled.json"
    assert main(["bench", str(whisper_dir), "--compile", "--batch", "1", "--seconds", "0.1",
                          "--repeats", "2", "--warmup", "1", "--json", str(out), *one_thread]) == 0
    report = json.loads(out.read_text())
    assert report["environment"]["compiled"] == "default"
    run = report["runs"][0]
    assert run["compact"]["flops"] < run["dense"]["flops"] and run["compact"]["n"] == 2
    assert "torch.compile" in bench.format_report(report)


def test_onnxruntime_runtime(whisper_dir, tmp_path, one_thread, monkeypatch):
    out = tmp_path / "ort.json"
    built = []  # the timed calls are onnxruntime sessions, one per model

    def counted(*args, **kw):
        built.append(args[0])
        return runner(*args, **kw)
    runner = bench.onnx_runner
    monkeypatch.setattr(bench, "onnx_runner", counted)
    assert main(["bench", str(whisper_dir), "--runtime", "onnxruntime", "--batch", "2", "--seconds", "0.2",
                          "--repeats", "2", "--warmup", "1", "--no-memory", "--json", str(out), *one_thread]) == 0
    report = json.loads(out.read_text())
    assert report["environment"]["runtime"].startswith("onnxruntime ")
    run = report["runs"][0]
    assert run["compact"]["flops"] < run["dense"]["flops"] and run["compact"]["n"] == run["dense"]["n"] == 2
    assert "onnxruntime" in bench.format_report(report) and len(built) == 2
    # what is timed computes the model: the session's output is the PyTorch encoder's
    from subnet.export import onnx_runner
    subject = bench.load_subject(str(whisper_dir))
    model = subject.family.fit_seconds(subject.model, 0.2)
    inputs, _ = bench.make_inputs(model, subject.family, 2, 0.2, torch.Generator().manual_seed(3))
    got = torch.from_numpy(onnx_runner(model, subject.family, inputs)()[0])
    with torch.no_grad():
        want = subject.family.main_output(subject.family.run_probe(model.double(), {
            k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}))
    assert got.shape == want.shape and torch.allclose(got.double(), want, rtol=1e-4, atol=1e-4 * want.abs().max())


def test_bad_arguments(whisper_dir):
    with pytest.raises(SystemExit):
        main(["bench", str(whisper_dir), "--batch", "0"])
    with pytest.raises(SystemExit, match="at most"):
        main(["bench", str(whisper_dir), "--seconds", "5"])
    with pytest.raises(SystemExit, match="onnxruntime runs fp32 on the CPU"):
        main(["bench", str(whisper_dir), "--runtime", "onnxruntime", "--dtype", "bf16"])


@pytest.mark.slow
def test_pytest_benchmark_suites_run():
    """`pytest benchmarks --benchmark-only` stays runnable: every benchmark once, untimed."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "--benchmark-disable", "-q", "-p",
                          "no:cacheprovider"], cwd=root, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert " passed" in res.stdout and "failed" not in res.stdout


def test_metrics_json_and_subnet_bench_agree_on_the_same_timings():
    """metrics.json's latency (interleaved_latency) and `subnet bench` (run_bench) summarise
    per-call times with one rule: the same timings give the same median, p10 and p90."""
    clock = [0.011, 0.009, 0.013, 0.010, 0.030, 0.012, 0.008, 0.011, 0.010, 0.014, 0.009, 0.012]

    def fake_timer():
        it = iter(clock * 4)
        return lambda fn: (fn(), next(it))[1]

    model = build("wav2vec2")
    inputs, _ = bench.make_inputs(model, subnet.family_of(model), 1, 0.1, torch.Generator().manual_seed(0))
    lat = timing.interleaved_latency({"m": model}, inputs, repeats=len(clock), warmup=0, timed=fake_timer())
    subject = bench.Subject(model, "w2v", "backbone", None)
    report = bench.run_bench({"model": subject}, batches=(1,), seconds=(0.1,), repeats=len(clock), warmup=0,
                             flops=False, memory=False, timed=fake_timer())
    ran = report["runs"][0]["model"]
    assert ran["times_s"] == clock
    for key in ("median_s", "p10_s", "p90_s"):
        assert lat["m"][key] == ran[key], key
    assert (lat["m"]["p10_s"], lat["m"]["p90_s"]) == pytest.approx((0.009, 0.0139))  # inclusive quantiles of `clock`


def test_reports_record_the_kernel_choices(monkeypatch):
    """metrics.json and `subnet bench` record which backend each fused op ran on (what
    subnet_kernels measured; nothing is measured on the CPU, so the list is what it returns)."""
    choice = [{"op": "gated_act", "device": "cuda:0", "backend": "triton", "reason": "fastest: 0.1 ms"}]
    monkeypatch.setattr(bench, "measured_choices", lambda: choice)
    model = build("wav2vec2")
    report = bench.run_bench({"model": bench.Subject(model, "w2v", "backbone", None)}, batches=(1,),
                             seconds=(0.1,), repeats=1, warmup=0, flops=False, memory=False)
    assert report["kernel_choices"] == choice
