"""subnet baseline probe|scratch|random|refit|importance on a tiny random Whisper encoder and tones."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import subnet
from subnet.cli import parser
from subnet.core.artifact import read_info
from subnet.training.baselines import gate_importance, random_init, random_keep, top_keep
from subnet.training.loop import ExtractConfig

STEPS = 12  # the reference extraction's steps (conftest.REFERENCE_STEPS)


def baseline(method, tiny_whisper, tones, out, *extra):  # noqa: F811
    argv = ["baseline", method, "--train", str(tones / "train"), "--valid", str(tones / "valid"),
            "--test", str(tones / "test"), "--max-seconds", "1", "--quiet", "--out", str(out), *extra]
    if method != "scratch":
        argv += ["--backbone", str(tiny_whisper)]
    args = parser().parse_args(argv)
    assert args.func(args) == 0
    return json.loads((out / "metrics.json").read_text())


def counts(path):
    return {n: len(g["keep"]) for n, g in json.loads((path / "subnet.json").read_text())["groups"].items()}


def same_format(m, ref):
    missing = set(json.loads((ref / "metrics.json").read_text())) - set(m)
    assert not missing, missing
    assert m["metric"] == "accuracy" and m["eval_clips"] == 18 and 0 <= m["compact"] <= 1


def test_probe_keeps_everything(tiny_whisper, tones, reference, tmp_path):  # noqa: F811
    m = baseline("probe", tiny_whisper, tones, tmp_path, "--reference", str(reference))
    same_format(m, reference)
    assert m["method"] == "probe" and m["steps"] == STEPS  # the reference's budget
    assert m["params"]["kept_fraction"] == 1.0 and set(m["kept_fraction"].values()) == {1.0}
    assert json.loads((tmp_path / "config.json").read_text())["train_gates"] is False


def test_random_keeps_the_reference_counts(tiny_whisper, tones, reference, tmp_path):  # noqa: F811
    m = baseline("random", tiny_whisper, tones, tmp_path / "a", "--reference", str(reference))
    same_format(m, reference)
    assert counts(tmp_path / "a") == counts(reference)
    ref = json.loads((reference / "metrics.json").read_text())
    assert m["params"]["compact"] == ref["params"]["compact"]
    # another seed, other units, same counts
    baseline("random", tiny_whisper, tones, tmp_path / "b", "--reference", str(reference), "--seed", "1",
             "--steps", "2")
    a, b = (json.loads((tmp_path / d / "subnet.json").read_text())["groups"] for d in "ab")
    assert counts(tmp_path / "b") == counts(reference) and a != b


def test_refit_keeps_the_reference_units_and_trains_a_new_head(tiny_whisper, tones, reference, tmp_path):  # noqa: F811
    m = baseline("refit", tiny_whisper, tones, tmp_path, "--reference", str(reference))
    same_format(m, reference)
    groups = {n: g["keep"] for n, g in json.loads((tmp_path / "subnet.json").read_text())["groups"].items()}
    ref_groups = {n: g["keep"] for n, g in json.loads((reference / "subnet.json").read_text())["groups"].items()}
    assert m["method"] == "refit" and groups == ref_groups
    head, ref_head = (load_file(str(d / "head.safetensors")) for d in (tmp_path, reference))
    assert any(not torch.equal(head[k], ref_head[k]) for k in head)  # its own head, trained anew


def test_importance_keeps_the_top_scored_units(tiny_whisper, tones, reference, tmp_path):  # noqa: F811
    m = baseline("importance", tiny_whisper, tones, tmp_path, "--reference", str(reference), "--score-batches", "2")
    same_format(m, reference)
    assert counts(tmp_path) == counts(reference)
    scores = torch.load(tmp_path / "importance.pt", weights_only=True)
    kept = json.loads((tmp_path / "subnet.json").read_text())["groups"]
    for name, s in scores.items():
        idx = kept[name]["keep"]
        dropped = sorted(set(range(s.numel())) - set(idx))
        if idx and dropped:
            assert s[idx].min() >= s[dropped].max()


@pytest.mark.slow
def test_scratch_has_the_reference_architecture(tones, reference, tmp_path):  # noqa: F811
    m = baseline("scratch", None, tones, tmp_path, "--reference", str(reference), "--steps-factor", "1.5")
    same_format(m, reference)
    ref = json.loads((reference / "metrics.json").read_text())
    assert m["params"]["compact"] == ref["params"]["compact"] and m["params"]["full"] == ref["params"]["full"]
    assert m["steps"] == round(1.5 * STEPS)
    assert counts(tmp_path) == counts(reference)
    a, b = subnet.load(tmp_path), subnet.load(reference)
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    assert not torch.allclose(a.layers[0].fc1.weight, b.layers[0].fc1.weight)  # not the pretrained weights
    assert torch.equal(a.embed_positions.weight, b.embed_positions.weight)  # the fixed sinusoids stay


def test_helpers(tiny_whisper, reference):  # noqa: F811
    info = read_info(reference)
    keep = random_keep(info, seed=3)
    assert {n: int(k.sum()) for n, k in keep.items()} == {n: len(i) for n, i in info.keep.items()}
    assert top_keep({"g": torch.tensor([0.1, 0.9, 0.5, 0.7])}, {"g": 2})["g"].tolist() == [False, True, False, True]

    from subnet.families import family_named
    enc = family_named(info.family).build(info.base)  # as scratch builds it: positions frozen
    before = {n: p.clone() for n, p in enc.named_parameters()}
    random_init(enc, seed=0)
    changed = {n for n, p in enc.named_parameters() if not torch.equal(p, before[n])}
    assert "layers.0.fc1.weight" in changed and "embed_positions.weight" not in changed


def test_gate_importance_is_the_gate_gradient(tiny_whisper):  # noqa: F811
    from subnet.training.extract import prepare_backbone
    from subnet.training.loop import Batch, Extractor

    enc = prepare_backbone(subnet.load_backbone(str(tiny_whisper)), 1.0)
    ex = Extractor(enc, 3, ExtractConfig(train_gates=False, head_dropout=0.0), "unused")
    b = Batch(torch.randn(4, 16000), torch.full((4,), 16000), torch.tensor([0, 1, 2, 0]))
    scores = gate_importance(ex, [b, b])
    assert set(scores) == set(ex.masked.groups) and all(s.min() >= 0 for s in scores.values())
    assert not any(p.requires_grad for p in ex.masked.logits)  # left as it found them
    # compare one group against a finite difference of the loss in its gate
    from subnet.training.tasks import task_named
    name = next(n for n, g in ex.masked.groups.items() if g.kind == "head")
    with torch.no_grad():
        def loss(gate_on):
            keep = {n: torch.ones(g.size, dtype=torch.bool) for n, g in ex.masked.groups.items()}
            keep[name][0] = gate_on
            ex.masked.set_keep(keep)
            out, frames = ex.pipeline(b.waves, b.lengths)
            return float(task_named("classify").loss(out, frames, b.targets))
        full, without = loss(True), loss(False)
    # first order: L(g=0) - L(g=1) ~ -dL/dg; same sign and magnitude within a loose factor
    assert scores[name][0] / 2 == pytest.approx(abs(full - without), rel=0.9, abs=1e-4)


def test_extract_refit_is_the_refit_baseline(tiny_whisper, tones, tmp_path, capsys):  # noqa: F811
    """`subnet extract --refit` = the extraction, then `subnet baseline refit --reference OUT`
    (what the experiments report as refit): same units, the same new head, the same metrics."""
    from subnet.cli import main
    out = tmp_path / "ext"
    assert main(["extract", "--backbone", str(tiny_whisper), "--train", str(tones / "train"), "--valid",
                 str(tones / "valid"), "--test", str(tones / "test"), "--max-seconds", "1", "--steps", str(STEPS),
                 "--batch-size", "6", "--eval-every", "6", "--loss", "budget", "-t", "0.3", "--lambda", "2",
                 "--lr-gates", "0.3", "--warmup", "0", "--quiet", "--no-latency", "--refit",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "refit (the same units" in printed and "is better)" in printed
    m = json.loads((out / "refit" / "metrics.json").read_text())
    assert m["method"] == "refit" and m["reference"] == str(out)
    assert counts(out / "refit") == counts(out) and m["params"] == json.loads((out / "metrics.json").read_text())["params"]
    separate = baseline("refit", tiny_whisper, tones, tmp_path / "separate", "--reference", str(out), "--no-latency")
    assert separate["compact"] == m["compact"] and separate["valid_at_best"] == m["valid_at_best"]
    a, b = (load_file(str(d / "head.safetensors")) for d in (out / "refit", tmp_path / "separate"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_extract_refit_refuses_a_probe(tiny_whisper, tones, tmp_path):  # noqa: F811
    from subnet.cli import main
    with pytest.raises(SystemExit, match="--refit needs gates"):
        main(["extract", "--backbone", str(tiny_whisper), "--train", str(tones / "train"), "--valid",
              str(tones / "valid"), "--probe", "--refit", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()  # refused before anything was written


@pytest.mark.parametrize("method", ["random", "refit", "importance"])
def test_fixed_unit_baselines_run_the_encoder_at_the_kept_size(method, tiny_whisper, tones, reference, tmp_path,  # noqa: F811
                                                              monkeypatch):
    """Once their units are chosen, random, refit and importance freeze the others: the head
    trains on a copy of the encoder shrunk to the kept units (the compact model's size)."""
    from subnet.core.gates import MaskedModel
    built = []
    real = MaskedModel._shrunk_copy

    def spy(self, alive):
        copy = real(self, alive)
        built.append(sum(p.numel() for p in copy.parameters()))
        return copy

    monkeypatch.setattr(MaskedModel, "_shrunk_copy", spy)
    m = baseline(method, tiny_whisper, tones, tmp_path, "--reference", str(reference))
    assert built and built[-1] == m["params"]["compact"] < m["params"]["full"]
