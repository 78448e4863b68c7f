"""EncoderCache: runs with fixed gates compute each clip's hidden states once, with the same
results as recomputing them; a changed gate decision is never served stale states."""
from __future__ import annotations

import json

import pytest
import torch

from subnet import load_backbone
from subnet.training.encoder_cache import EncoderCache
from subnet.core.artifact import read_info
from subnet.training.baselines import importance, probe, random_keep
from subnet.training.extract import prepare_backbone, setup_run
from subnet.training.loop import ExtractConfig, run_loop

CFG = ExtractConfig(steps=15, batch_size=6, eval_every=5, lr_head=3e-3, train_gates=False)


def _run(tiny_whisper, tones, out, cfg):  # noqa: F811
    bb = prepare_backbone(load_backbone(str(tiny_whisper)), 1.0)
    run = setup_run(bb, tones / "train", tones / "valid", tones / "test", cfg, out, 1.0, progress=False)
    return run


def test_probe_with_cache_equals_without(tiny_whisper, tones, tmp_path):  # noqa: F811
    runs = {}
    for cached in (True, False):
        run = _run(tiny_whisper, tones, tmp_path / str(cached), ExtractConfig(**{**CFG.__dict__, "cache_encoder": cached}))
        run_loop(run.ex, run.steps, run.valid, run.log, progress=False)
        runs[cached] = run
    cache = runs[True].ex.pipeline.cache
    assert runs[False].ex.pipeline.cache is None
    # 15 steps of 6 over 36 training clips: only the first epoch (6 batches) and the first
    # validation (18 clips) are computed; every later batch is served from the cache
    assert cache.misses == 36 + 18 and cache.hits == (15 - 6) * 6 + 2 * 18
    for a, b in zip(runs[True].ex.head.state_dict().values(), runs[False].ex.head.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    logs = [[json.loads(line) for line in (tmp_path / str(c) / "log.jsonl").read_text().splitlines()] for c in (True, False)]
    assert [r.get("valid") for r in logs[0]] == [r.get("valid") for r in logs[1]]


def test_changed_gates_are_never_served_stale_states(tiny_whisper, tones, reference, tmp_path):  # noqa: F811
    run = _run(tiny_whisper, tones, tmp_path, CFG)
    ex, batch = run.ex, run.steps(0)
    with torch.no_grad():
        full = ex.pipeline.encode(batch.waves, batch.lengths)
        assert all(torch.equal(a, b) for a, b in
                   zip(full, ex.pipeline.cache.states(ex.pipeline.encode, batch.waves, batch.lengths)))
        ex.masked.set_keep(random_keep(read_info(reference), seed=1))
        pruned = ex.pipeline.cache.states(ex.pipeline.encode, batch.waves, batch.lengths)
        expect = ex.pipeline.encode(batch.waves, batch.lengths)
    assert not torch.allclose(pruned[-1], full[-1])
    assert all(torch.equal(a, b) for a, b in zip(pruned, expect))


def test_the_cache_is_off_while_the_encoder_trains(tiny_whisper, tones, tmp_path):  # noqa: F811
    run = _run(tiny_whisper, tones, tmp_path, CFG)
    p = next(run.ex.masked.backbone.parameters())
    p.requires_grad_(True)
    batch = run.steps(0)
    run.ex.pipeline(batch.waves, batch.lengths)
    assert run.ex.pipeline.cache.hits == run.ex.pipeline.cache.misses == 0


@pytest.mark.slow
def test_baselines_use_the_cache_and_match_uncached_metrics(tiny_whisper, tones, reference, tmp_path):  # noqa: F811
    for fn in (lambda c, o: probe(str(tiny_whisper), tones / "train", tones / "valid", tones / "test", c, o,
                                  max_seconds=1.0, progress=False, measure_latency=False),
               lambda c, o: importance(str(tiny_whisper), reference, tones / "train", tones / "valid", tones / "test",
                                       c, o, max_seconds=1.0, progress=False, measure_latency=False)):
        cached = fn(CFG, tmp_path / "a")
        plain = fn(ExtractConfig(**{**CFG.__dict__, "cache_encoder": False}), tmp_path / "b")
        assert abs(cached["compact"] - plain["compact"]) < 1e-9 and cached["best_step"] == plain["best_step"]


def test_padding_width_is_ignored_only_for_fixed_length_front_ends():
    calls = []

    def encode(waves, lengths):
        calls.append(waves.shape)
        return (waves[:, :4] * 2,)
    cache = EncoderCache(lambda: b"gates")
    clip = torch.randn(1, 10)
    narrow, wide = clip, torch.cat([clip, torch.zeros(1, 5)], 1)
    n = torch.tensor([10])
    a = cache.states(encode, narrow, n, width_matters=False)
    b = cache.states(encode, wide, n, width_matters=False)
    assert len(calls) == 1 and torch.equal(a[0], b[0])
    cache.states(encode, wide, n, width_matters=True)  # another width is another input
    assert len(calls) == 2


@pytest.mark.parametrize("width_matters", [False, True])
def test_a_batch_with_some_clips_cached_encodes_only_the_others(width_matters):
    calls = []

    def encode(waves, lengths):  # per-clip states that depend on the samples only
        calls.append(len(waves))
        return waves.cumsum(1), 2 * waves

    gen = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(1, 50, generator=gen) for _ in range(3))
    lengths = torch.tensor([50, 50])
    cache = EncoderCache(lambda: b"s")
    cache.states(encode, torch.cat([a, b]), lengths, width_matters)
    got = cache.states(encode, torch.cat([c, a]), lengths, width_matters)
    want = encode(torch.cat([c, a]), lengths)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert cache.hits == 1 and cache.misses == 3
    # a fixed-length front end: the cached clip is not encoded again; else the batch is (its width is in the key)
    assert calls[:2] == [2, (2 if width_matters else 1)]
    assert len(cache.store) == 3
