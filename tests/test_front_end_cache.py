"""FrontEndCache: with no gate in the conv front end, its output is computed once per clip,
and the encoder's output and the gate gradients are exactly those of recomputing it."""
from __future__ import annotations

import json

import pytest
import torch

import subnet
from builders import build, build_torchaudio
from subnet import load_backbone
from subnet.training.extract import prepare_backbone, setup_run
from subnet.training.front_end_cache import FrontEndCache
from subnet.training.pipeline import Pipeline
from subnet.training.loop import ExtractConfig, run_loop


def _waves(n: int, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    waves = torch.randn(n, samples, generator=g)
    lengths = torch.full((n,), samples)
    lengths[-1] = samples * 3 // 4
    waves[-1, lengths[-1]:] = 0
    return waves, lengths


class _Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.out = torch.nn.LazyLinear(3)

    def forward(self, states, frames):
        return self.out(states[-1].mean(1))


@pytest.mark.parametrize("kind", ["whisper", "wav2vec2", "wavlm"])
def test_cached_front_end_gives_the_same_outputs_and_gate_gradients(kind):
    backbone = build(kind)
    mm = subnet.attach_masks(backbone, kinds=("head", "ffn"))
    paths = mm.family.front_end_modules(backbone)
    assert paths and FrontEndCache.applies(backbone, paths, mm.groups)
    pipe = Pipeline(mm, mm.family.front_end(backbone), _Head(), "classify")
    waves, lengths = _waves(4, 8000, seed=int(torch.randint(0, 10**6, ())))

    def run():
        mm.zero_grad(set_to_none=True)
        out, _ = pipe(waves, lengths)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in mm.logits]

    plain = run()
    cache = FrontEndCache()
    cache.install(backbone, paths)
    pipe.front_end_cache = cache
    first, second = run(), run()
    assert cache.misses == 4 * len(paths) and cache.hits == 4 * len(paths)
    for got in (first, second):
        assert torch.equal(got[0], plain[0])
        assert all(torch.equal(a, b) for a, b in zip(got[1], plain[1]))
    # the clips in another order and another batch: still served from the store
    order = torch.tensor([2, 0, 3, 1])
    out, _ = pipe(waves[order], lengths[order])
    assert cache.hits == 8 * len(paths)
    torch.testing.assert_close(out, plain[0][order], rtol=1e-5, atol=1e-6)
    cache.remove()
    assert all("forward" not in vars(backbone.get_submodule(p)) for p in paths)


def test_a_gated_front_end_is_not_cached():
    backbone = build("whisper")
    mm = subnet.attach_masks(backbone)  # conv channels gated too
    assert not FrontEndCache.applies(backbone, mm.family.front_end_modules(backbone), mm.groups)


def test_trainable_front_end_or_no_clips_means_plain_compute():
    backbone = build("wav2vec2")
    cache = FrontEndCache()
    cache.install(backbone, ["feature_extractor"])
    waves, lengths = _waves(2, 4000, seed=3)
    backbone(waves)  # outside `clips`: nothing stored
    assert cache.misses == 0 and not cache.store
    backbone.feature_extractor.requires_grad_(True)
    with cache.clips(waves, lengths, True):
        out = backbone(waves).last_hidden_state
        assert cache._keys is None  # a trained front end: no clip was even hashed
    assert cache.misses == 0 and out.requires_grad


def test_torchaudio_feature_extractor_tuple_output():
    model, x = build_torchaudio("wav2vec2")
    mm = subnet.attach_masks(model, kinds=("head",))
    paths = mm.family.front_end_modules(model)
    assert FrontEndCache.applies(model, paths, mm.groups)
    waves, lengths = x["waveforms"], x["lengths"]
    with torch.no_grad():
        plain = mm(waves, lengths)
        cache = FrontEndCache()
        cache.install(model, paths)
        for _ in range(2):
            with cache.clips(waves, lengths, True):
                got = mm(waves, lengths)
            assert torch.equal(got[0], plain[0]) and torch.equal(got[1], plain[1])
    assert cache.hits == cache.misses == 3


def test_extraction_without_conv_gates_equals_uncached(tiny_whisper, tones, tmp_path):  # noqa: F811
    logs, caches = [], []
    for cached in (True, False):
        cfg = ExtractConfig(steps=12, batch_size=6, eval_every=4, kinds=("head", "ffn"), freeze_dead=3,
                            lam=2.0, t=0.4, cache_front_end=cached)
        bb = prepare_backbone(load_backbone(str(tiny_whisper)), 1.0)
        run = setup_run(bb, tones / "train", tones / "valid", tones / "test", cfg, tmp_path / str(cached), 1.0,
                        progress=False)
        run_loop(run.ex, run.steps, run.valid, run.log, progress=False)
        caches.append(run.ex.pipeline.front_end_cache)
        logs.append([json.loads(line) for line in (tmp_path / str(cached) / "log.jsonl").read_text().splitlines()])
    assert caches[1] is None and caches[0].hits > 0
    strip = [[{k: v for k, v in r.items() if k not in ("seconds", "time", "elapsed")} for r in log] for log in logs]
    assert strip[0] == strip[1]
