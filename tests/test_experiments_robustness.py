"""`make robustness`: the shifted test sets of the experiments, the plan and the table."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from experiments import robustness, runner
from experiments.runner import EXPERIMENTS, Experiment, ExtraSet, Job, Protocol, prepare_test_set


def _recipe(root, name="toy"):
    """A recipe-like folder: two splits, a `language` field, relative paths."""
    rng = np.random.default_rng(0)
    rows = []
    for split in ("train", "test"):
        for i, lang in enumerate(("en", "fr", "en")):
            rel = f"{split}/l{i % 2}/{lang}_{i}.wav"
            (root / name / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / name / rel, (0.05 * rng.standard_normal(8000)).astype(np.float32), 16000)
            rows.append({"path": rel, "label": f"l{i % 2}", "split": split, "language": lang})
    (root / name / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_a_filtered_test_set_points_at_its_clips(tmp_path):
    _recipe(tmp_path)
    out = prepare_test_set(ExtraSet("English, test", "toy", "test", keep=(("language", "en"),)), tmp_path)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["language"] for r in rows] == ["en", "en"] and {r["split"] for r in rows} == {"test"}
    assert all((tmp_path / "toy" / "test").resolve() in __import__("pathlib").Path(r["path"]).parents for r in rows)
    with pytest.raises(ValueError, match="no clip"):
        prepare_test_set(ExtraSet("none", "toy", "valid"), tmp_path)


def test_a_degraded_test_set_is_fixed_by_its_seed(tmp_path):
    _recipe(tmp_path)
    x = ExtraSet("noisy test", "toy", "test", degrade=(("noise_snr", "5"),))
    out = prepare_test_set(x, tmp_path)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and {r["split"] for r in rows} == {"test"}
    first = sf.read(out.parent / rows[0]["path"])[0]
    clean = sf.read(tmp_path / "toy" / rows[0]["path"])[0]
    snr = 10 * np.log10(np.mean(clean ** 2) / np.mean((first - clean) ** 2))
    assert abs(snr - 5) < 0.3  # (16-bit files)
    out.unlink()  # rebuilt: the same samples
    prepare_test_set(x, tmp_path)
    assert np.array_equal(sf.read(out.parent / rows[0]["path"])[0], first)


def test_the_experiments_with_shifted_sets():
    shifted = {e.name: [x.label for x in e.extra_tests] for e in EXPERIMENTS if e.extra_tests}
    assert set(shifted) == {"1-kws", "2-instruments"}
    assert "real English digits (Asterisk)" in shifted["1-kws"] and len(shifted["2-instruments"]) == 2


def test_plan_and_table(tmp_path):
    exp = Experiment("toy", "a toy", "bb", "toy", extra_tests=(ExtraSet("far", "toy", "test"),),
                     shifted_valid=ExtraSet("far valid", "toy", "valid"))
    jobs = robustness.plan([exp], Protocol(seeds=(0, 1)))
    methods = [m for m in robustness.OPTIONS if m not in robustness.LONG_ONLY]
    assert len(jobs) == 2 * (len(robustness.PROBES) + len(robustness.TARGETS) * (len(methods) + 1))
    assert {j.method for j in jobs} == {"probe", "probe+augment", *methods, "extract+shifted-valid"}
    # a run distilling the probe's predictions waits for the probe of its seed, its teacher
    kd = [j for j in jobs if j.method in robustness.TEACHER_OPTIONS]
    assert len(kd) == 2 * len(robustness.TARGETS) * len([m for m in methods if m in robustness.TEACHER_OPTIONS])
    assert all(j.deps == (Job("probe", "toy", j.seed),) for j in kd)
    assert all(j.deps == () for j in jobs if j.method not in robustness.TEACHER_OPTIONS)
    runs = []
    for j in jobs:
        v = 0.9 if j.method == "probe" else 0.7 + 0.1 * j.seed
        runs.append({"method": j.method, "t": j.t, "compact": v, "train_seconds": 10,
                     "params": {"kept_fraction": 1.0 if j.t is None else j.t - 0.01},
                     "extra": {"far": {"value": v - 0.2, "clips": 10}}})
    text = robustness.table(exp, runs)
    assert "| probe | - | 0.0% | 0.900 +- 0.000 | 0.700 +- 0.000 | 10 |" in text
    assert "| extract+both | 0.4 | 61.0% | 0.750 +- 0.071 | 0.550 +- 0.071 | 10 |" in text
    assert "far: 10 clips; 2 seeds a row." in text
    doc = tmp_path / "RESULTS.md"
    doc.write_text(f"a\n{robustness.MARKERS[0]}\nold\n{robustness.MARKERS[1]}\nb\n")
    assert robustness.update_doc(doc, text)
    assert "old" not in doc.read_text() and doc.read_text().startswith("a\n") and "extract+both" in doc.read_text()
    assert not robustness.update_doc(tmp_path / "none.md", text)

    # an invocation with --methods: its methods' rows are replaced, the other rows stay, in plan order
    partial = [dict(r, compact=0.5) for r in runs if r["method"] in ("probe", "extract+kd")]
    assert robustness.update_doc(doc, robustness.table(exp, partial), keep_other_rows=True)
    merged = doc.read_text()
    assert "| extract+both | 0.4 | 61.0% | 0.750 +- 0.071 | 0.550 +- 0.071 | 10 |" in merged
    assert "| extract+kd | 0.4 | 61.0% | 0.500 +- 0.000 | 0.550 +- 0.071 | 10 |" in merged
    assert "| probe | - | 0.0% | 0.500 +- 0.000 | 0.700 +- 0.000 | 10 |" in merged
    rows = [line.split("|")[1].strip() for line in merged.splitlines() if line.startswith("| ") and "method" not in line]
    assert rows == [m for m in robustness.METHODS if m not in robustness.LONG_ONLY
                    for _ in ((0,) if m in robustness.PROBES else robustness.TARGETS)]
    assert merged.count(robustness.MARKERS[0]) == 1 and merged.endswith("b\n")

    # another size (--long --target 0.44): its own row, after the larger t, the t = 0.4 row kept
    other = [dict(r, t=0.44) for r in runs if r["method"] == "extract+kd" and r["t"] == 0.4]
    assert robustness.update_doc(doc, robustness.table(exp, other), keep_other_rows=True)
    kd_rows = [line.split("|")[2].strip() for line in doc.read_text().splitlines() if line.startswith("| extract+kd |")]
    assert kd_rows == ["0.6", "0.44", "0.4"]


def test_long_plan():
    exp = Experiment("toy", "a toy", "bb", "toy", extra_tests=(ExtraSet("far", "toy", "test"),))
    jobs = robustness.plan_long([exp], Protocol(seeds=(0, 1)))
    no_unlabeled = [m for m in robustness.LONG_METHODS if m not in robustness.UNLABELED]
    assert [j.method for j in jobs if j.seed == 0] == ["probe", "probe+augment", *no_unlabeled]
    assert all(j.t == robustness.LONG_TARGET for j in jobs if j.method not in robustness.PROBES)
    assert all(j.deps == ((Job("probe", "toy", j.seed),) if j.method in robustness.TEACHER_OPTIONS else ())
               for j in jobs)
    # methods that distil on clips without labels: only for an experiment that has some
    assert robustness.UNLABELED and set(robustness.UNLABELED) <= set(robustness.LONG_METHODS)
    clips = (("shifted", ExtraSet("far clips", "toy")), ("degraded", ExtraSet("noisy clips", "toy", "valid")),
             ("in-domain", ExtraSet("near clips", "toy", "train")), ("shifted-full", ExtraSet("more far", "big")),
             ("in-domain-full", ExtraSet("more near", "big", "train")),
             ("degraded-full", ExtraSet("more noisy", "big", "valid")))
    with_clips = Experiment("toy", "a toy", "bb", "toy", extra_tests=exp.extra_tests, unlabeled=clips)
    jobs = robustness.plan_long([with_clips], Protocol(seeds=(0,)))
    assert [j.method for j in jobs] == ["probe", "probe+augment", *robustness.LONG_METHODS]
    # a method distilling the augmented probe waits for it, and --methods keeps that probe
    augmented = [j for j in jobs if j.method.endswith(runner.AUGMENTED_TEACHER)]
    assert augmented and all(j.deps == (Job("probe+augment", "toy", 0),) for j in augmented)
    chosen = robustness.select(jobs, [augmented[0].method])
    assert [j.method for j in chosen] == ["probe", "probe+augment", augmented[0].method]
    assert [j.method for j in robustness.select(jobs, ["extract+kd"])] == ["probe", "extract+kd"]
    only_shifted = Experiment("toy", "a toy", "bb", "toy", extra_tests=exp.extra_tests, unlabeled=clips[:1])
    planned = {j.method for j in robustness.plan_long([only_shifted], Protocol(seeds=(0,)))}
    assert "extract+kd+augment+unlabeled" in planned and "extract+kd+augment+unlabeled+degraded" not in planned
    assert "extract+kd+unlabeled+in-domain" not in planned


def test_unlabeled_sets_are_never_a_test_set():
    """An experiment's clips without labels come from other recipes or splits than anything it is
    tested on (a degraded copy of a split counts as that split), and every method's sets exist for
    both experiments that have any."""
    for e in EXPERIMENTS:
        tested = {(e.recipe, "test"), *((x.recipe, x.split) for x in e.extra_tests)}
        assert not tested & {(x.recipe, x.split) for _, x in e.unlabeled}, e.name
    having = [e for e in EXPERIMENTS if e.unlabeled]
    assert [e.name for e in having] == ["1-kws", "2-instruments"]
    assert dict(having[1].unlabeled).keys() >= {"shifted", "degraded", "in-domain"}
    assert all(robustness._has_unlabeled(having[1], m) for m in robustness.UNLABELED)


def test_unlabeled_manifest_joins_the_named_sets(tmp_path):
    data = tmp_path / "data"
    for recipe, n in (("a", 3), ("b", 2)):
        (data / recipe / "clips").mkdir(parents=True)
        rows = [{"path": f"clips/{i}.wav", "label": "x", "split": "train"} for i in range(n)]
        (data / recipe / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    exp = Experiment("toy", "a toy", "bb", "a", unlabeled=(("one", ExtraSet("set one", "a")),
                                                           ("two", ExtraSet("set two", "b"))))
    out = runner.unlabeled_manifest(exp, runner.EXPERIMENT_UNLABELED + "one+two", data)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(r["path"]) for r in rows] == [(data / "a" / "clips" / f"{i}.wav").resolve() for i in range(3)] + [
        (data / "b" / "clips" / f"{i}.wav").resolve() for i in range(2)]
    with pytest.raises(ValueError, match="no unlabeled set three .*it has: one, two"):
        runner.unlabeled_manifest(exp, runner.EXPERIMENT_UNLABELED + "one+three", data)


def test_target_needs_long_and_a_fraction(capsys):
    for argv, message in ((["--target", "0.45", "--table-only"], "only with --long"),
                          (["--long", "--target", "1.5", "--table-only"], "between 0 and 1")):
        with pytest.raises(SystemExit):
            robustness.main(argv)
        assert message in capsys.readouterr().err


def test_experiments_option_trains_only_those(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(robustness, "prepare_data", lambda exps, *a: seen.setdefault("data", [e.name for e in exps]))
    monkeypatch.setattr(robustness, "run_jobs", lambda jobs, *a, **k: seen.setdefault("jobs", jobs))
    robustness.main(["--out", str(tmp_path), "--doc", str(tmp_path / "none.md"), "--long", "--target", "0.44",
                     "--experiments", "2-instruments", "--methods", "extract+kd"])
    assert seen["data"] == ["2-instruments"]
    assert {(j.exp, j.method, j.t) for j in seen["jobs"]} == {("2-instruments", "probe", None),
                                                              ("2-instruments", "extract+kd", 0.44)}


def test_a_set_of_another_size_is_built_beside(tmp_path, monkeypatch):
    from subnet.data.recipes import registry
    built = []

    def fake_build(recipe, out, seed, size, overwrite):
        built.append((recipe, Path(out).name, size))
        Path(out).mkdir(parents=True)
        (Path(out) / "manifest.jsonl").write_text(json.dumps({"path": "a.wav", "label": "x", "split": "s"}) + "\n")

    monkeypatch.setattr(registry, "build_recipe", fake_build)
    exp = Experiment("toy", "a toy", "bb", "toy", unlabeled=(("more", ExtraSet("more clips", "extra", "s", size="full")),
                                                             ("some", ExtraSet("some clips", "extra", "s"))))
    runner.prepare_data([exp], tmp_path, "small")
    assert sorted(built) == [("extra", "extra", "small"), ("extra", "extra-full", "full"), ("toy", "toy", "small")]
    rows = [json.loads(line) for line in exp.unlabeled[0][1].manifest(tmp_path).read_text().splitlines()]
    assert rows[0]["path"] == str((tmp_path / "extra-full" / "a.wav").resolve())


def test_a_long_table_keeps_the_rows_of_other_sizes(tmp_path):
    start, end = robustness.long_markers(robustness.LONG)
    row = "| extract+kd | 0.44 | 60.8% | 0.436 +- 0.019 | 0.771 +- 0.039 | 0.127 +- 0.020 | 416 |"
    heading = next(e for e in EXPERIMENTS if e.name == "2-instruments")
    doc = tmp_path / "RESULTS.md"
    doc.write_text(f"{start}\n#### {heading.name}: {heading.title}\n\n| method | t |\n|---|---|\n{row}\n{end}\n")
    robustness.main(["--out", str(tmp_path), "--doc", str(doc), "--long", "--table-only"])  # (no runs at t = 0.4)
    assert row in doc.read_text()
