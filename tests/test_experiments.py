"""`make results` end to end at toy scale: plan, two workers, latency pass, reports, summary."""
from __future__ import annotations

import json
import re

import pytest

from experiments.runner import (Experiment, Protocol, main, measure_latencies, plan, run_jobs,
                                update_results_doc, write_reports)


def test_plan_orders_references_before_baselines():
    exps = [Experiment("a", "A", "bb", "kws-tts"), Experiment("b", "B", "bb", "pitch")]
    jobs = plan(exps, Protocol(targets=(0.3, 0.45), seeds=(0, 1)))
    assert len(jobs) == 2 * (2 * (1 + 2 * 5) + 2)  # probe + 5 per target per seed; a long scratch and probe each
    for i, j in enumerate(jobs):
        assert all(jobs.index(d) < i for d in j.deps)
    assert {j.method for j in jobs} == {"probe", "extract", "random", "importance", "scratch", "refit",
                                        "scratch-4x", "probe-4x"}
    # the long runs start early (not last, alone), and each experiment's jobs stay together
    for exp in ("a", "b"):
        mine = [i for i, j in enumerate(jobs) if j.exp == exp]
        assert mine == list(range(mine[0], mine[-1] + 1))
        long = [i for i in mine if jobs[i].method.endswith("-4x")]
        assert len(long) == 2 and max(long) <= mine[0] + len(mine) // 2


@pytest.mark.slow
def test_runs_latency_and_reports(tiny_whisper, tones, tmp_path, capsys):  # noqa: F811
    data = tmp_path / "data"
    (data / "tones").mkdir(parents=True)
    lines = []
    for split in ("train", "valid", "test"):
        for wav in sorted((tones / split).rglob("*.wav")):
            lines.append(json.dumps({"path": str(wav), "label": wav.parent.name, "split": split}))
    (data / "tones" / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    exp = Experiment("toy", "tones", str(tiny_whisper), "tones")
    protocol = Protocol(steps=4, batch_size=6, eval_every=2, targets=(0.45,), seeds=(0, 1))
    root = tmp_path / "runs"
    jobs = plan([exp], protocol)
    run_jobs(jobs, root, data, protocol, [exp], workers=2)
    assert all((j.out(root) / "metrics.json").is_file() for j in jobs)
    measure_latencies([exp], root)
    m = json.loads((root / "toy" / "extract" / "t=0.45-s1" / "metrics.json").read_text())
    assert m["latency_batch1"]["compact"]["median_s"] > 0 and m["experiment"] == "toy"
    summary = write_reports([exp], root, tmp_path / "reports", protocol)
    assert "| toy | accuracy" in summary and "scratch" in summary
    report = (tmp_path / "reports" / "toy" / "report.md").read_text()
    assert "| scratch-4x |" in report and re.search(r"\| [012]/2 seeds \|", report)  # paired over both seeds
    long_probe = json.loads((root / "toy" / "probe-4x" / "s0" / "metrics.json").read_text())
    assert long_probe["method"] == "probe-4x" and long_probe["steps"] == 4 * protocol.steps
    assert "of the probe trained with 4x the steps" in report
    row = next(line for line in summary.splitlines() if line.startswith("| toy |")).split("|")[1:-1]
    assert len(row) == 7 and re.fullmatch(r" [0-9.]+ \+- [0-9.]+ ", row[3])  # the 4x probe's column
    # with --refit (the refit runs) against every baseline cut from the same extraction: one size
    assert re.fullmatch(r" importance [01]/1, random [01]/1, scratch [01]/1, scratch-4x [01]/1 ", row[6]), row[6]
    assert all(re.fullmatch(r" (none|[0-9.]+% \(t=0.45\)) / (none|[0-9.]+% \(t=0.45\)) ", row[i]) for i in (2, 4))
    assert "refit (the extraction's units, a new head)" in report
    assert "| refit |" in report and "refit (extraction's units)" in report
    assert re.search(r"Training: \d+ worker-minutes .*, extract [0-9.]+", summary)
    assert "### toy: tones" in summary and "| t | kept params | extraction | GFLOPs / clip |" in summary
    assert "](toy/metric_vs_kept.png)" in summary  # figure paths relative to summary.md
    doc = tmp_path / "RESULTS.md"
    doc.write_text("# Results\nwords\n<!-- table -->\nold\n<!-- /table -->\nmore words\n<!-- sections -->\nold\n"
                   "<!-- /sections -->\nend\n")
    assert update_results_doc(doc, summary)
    text = doc.read_text()
    assert "old" not in text and "more words" in text and text.endswith("end\n")
    assert "| toy | accuracy" in text and "](results/toy/metric_vs_kept.png)" in text
    assert not update_results_doc(tmp_path / "missing.md", summary)
    assert (tmp_path / "reports" / "toy" / "metric_vs_kept.png").stat().st_size > 10_000
    capsys.readouterr()
    run_jobs(jobs, root, data, protocol, [exp], workers=2)  # a second run finds everything finished
    assert f"{len(jobs)}/{len(jobs)} runs already finished, 0 to go" in capsys.readouterr().out


def test_cli_lists_the_plan(capsys):
    assert main(["--list", "--only", "3-pitch", "--seeds", "0", "--targets", "0.5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + 1 + 5  # the probe, the long probe, then extract, random, importance, scratch,
    assert out[1].startswith("3-pitch probe-4x seed 0")  # refit at one target (no long scratch at 0.5)


def test_reports_only_trains_nothing(tmp_path):
    assert main(["--out", str(tmp_path / "runs"), "--reports", str(tmp_path / "reports"), "--reports-only",
                 "--doc", str(tmp_path / "none.md")]) == 0
    assert (tmp_path / "reports" / "summary.md").is_file()
    assert not (tmp_path / "runs").exists()  # no data built, no protocol written, no run started


def test_only_limits_training_not_the_reports(tmp_path, monkeypatch):
    """--only picks what is trained; the summary and the doc's table keep every experiment."""
    import experiments.runner as ex
    seen = []
    monkeypatch.setattr(ex, "write_reports", lambda exps, *a: seen.append([e.name for e in exps]) or "summary")
    assert main(["--out", str(tmp_path / "runs"), "--reports", str(tmp_path / "reports"), "--reports-only",
                 "--only", "5-asr", "--doc", str(tmp_path / "none.md")]) == 0
    assert seen == [[e.name for e in ex.EXPERIMENTS]]


def test_a_resumed_run_counts_the_time_of_every_attempt(tmp_path):
    """train_seconds of a run killed and resumed: each attempt from its start to its last log
    line, the last until the end; the time between attempts is not work and is not counted."""
    from experiments.runner import attempts_seconds, record_attempt
    out = tmp_path / "run"
    out.mkdir()
    # an attempt begun before attempts.json existed: its first log line stands for its start
    (out / "log.jsonl").write_text("".join(json.dumps({"time": t, "step": s}) + "\n"
                                           for t, s in ((100.0, 1), (110.0, 2), (130.0, 3))))
    starts = record_attempt(out, now=1000.0)  # resumed much later
    assert starts == [100.0, 1000.0]
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps({"time": 1010.0, "step": 3}) + "\n")
    starts = record_attempt(out, now=5000.0)  # killed again, resumed again
    assert json.loads((out / "attempts.json").read_text()) == [100.0, 1000.0, 5000.0]
    assert attempts_seconds(out, starts, now=5025.0) == pytest.approx(30.0 + 10.0 + 25.0)
    fresh = tmp_path / "fresh"
    assert attempts_seconds(fresh, record_attempt(fresh, now=7.0), now=19.5) == pytest.approx(12.5)


def test_invocations_add_up(tmp_path, monkeypatch):
    """The wall time of a `make results` killed and resumed: the sum of its invocations."""
    from experiments import runner as experiments
    clock = iter([10.0, 25.0, 40.0, 100.0, 107.0])
    monkeypatch.setattr(experiments.time, "time", lambda: next(clock))
    first = experiments.Invocations(tmp_path)  # starts at 10, seen working at 25, then 40 (a run finished)
    first.touch()
    experiments.Invocations(tmp_path)  # resumed at 100, seen at 107
    lines = [json.loads(line) for line in (tmp_path / "invocations.jsonl").read_text().splitlines()]
    assert lines == [{"start": 10.0, "end": 40.0}, {"start": 100.0, "end": 107.0}]
    assert first.minutes() == pytest.approx((30.0 + 7.0) / 60)


def _fake_extraction(run, name, seed, keep):
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({
        "method": "extract", "t": 0.45, "seed": seed, "metric": "accuracy", "compact": 0.5,
        "eval_set": f"data/{name}/manifest.jsonl", "params": {"kept_fraction": 0.5}}))
    groups = {"conv1": {"kind": "conv", "size": 4}, "layers.0.self_attn.heads": {"kind": "head", "size": 4},
              "layers.0.ffn": {"kind": "ffn", "size": 8}}
    (run / "subnet.json").write_text(json.dumps({"groups": {g: {**v, "keep": k} for (g, v), k in
                                                            zip(groups.items(), keep)}}))


def test_cross_task_sections_table_and_figure(tmp_path):
    from experiments.summary import cross_task_sections
    from subnet.report import load_runs
    root = tmp_path / "runs"
    keeps = {("a", 0): ([0, 1], [0, 1], [0, 1, 2, 3]), ("a", 1): ([0, 1], [0, 2], [0, 1, 2, 4]),
             ("b", 0): ([2, 3], [0, 1], [4, 5, 6, 7]), ("b", 1): ([2, 3], [0, 1], [4, 5, 6, 7])}
    for (name, seed), keep in keeps.items():
        _fake_extraction(root / name / "extract" / f"t=0.45-s{seed}", name, seed, keep)
    exps = [Experiment("a", "A", "bb", "ra"), Experiment("b", "B", "bb", "rb"), Experiment("c", "C", "other", "rc")]
    _fake_extraction(root / "c" / "extract" / "t=0.45-s0", "c", 0, ([0], [0], [0]))  # alone on its backbone

    def by_exp():
        return {e: load_runs([root / e.name]) for e in exps}
    (sections,) = cross_task_sections(by_exp(), tmp_path / "reports", 0.45)
    assert "### Kept units across tasks (bb, t=0.45)" in sections
    assert "](cross-task/kept_units_bb.png)" in sections
    assert (tmp_path / "reports" / "cross-task" / "kept_units_bb.png").stat().st_size > 10_000
    tables = sections.split("Attention heads:")
    # all units, a's two seeds: conv 2 of 2, heads 1 of 3, ffn 3 of 5 shared -> 6/10; a against b: 2/14 for
    # either seed of a (heads 2 of 2 + ffn 0 of 8, or heads 1 of 3 + ffn 1 of 7; conv 0 of 4); chance
    # 2*2/4 + 2*2/4 + 4*4/8 = 4 shared of 16 - 4
    assert "| a | 0.60 (0.33) | 0.14 (0.33) |" in tables[0]
    assert "| b |  | 1.00 (0.33) |" in tables[0]  # the lower triangle left blank
    assert "| a | 0.33 (0.33) | 0.67 (0.33) |" in tables[1]  # heads alone: 1/3; (1 + 1/3) / 2
    without_b = {e: r for e, r in by_exp().items() if e.name != "b"}
    assert cross_task_sections(without_b, tmp_path / "r2", 0.45) == []  # no backbone shared by two
    for name in ("a", "b"):  # a backbone without attention heads: no heads table
        for seed in (0, 1):
            f = root / name / "extract" / f"t=0.45-s{seed}" / "subnet.json"
            groups = json.loads(f.read_text())["groups"]
            del groups["layers.0.self_attn.heads"]
            f.write_text(json.dumps({"groups": groups}))
    (sections,) = cross_task_sections(by_exp(), tmp_path / "r3", 0.45)
    assert "All gated units (4 conv channels, 8 FFN neurons)" in sections and "Attention heads" not in sections
