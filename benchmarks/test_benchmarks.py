"""pytest-benchmark suites: kernels, compaction, one training step, compact latency.

    .venv/bin/python -m pytest benchmarks --benchmark-only            # all, a few minutes on CPU
    .venv/bin/python -m pytest benchmarks --benchmark-only -k step     # one group

Each group puts a candidate next to its baseline (pytest-benchmark's table compares them);
shapes are small enough for 2 CPU cores. No test here asserts a time: the figures with
targets come from benchmarks/run.py (interleaved, one process) into docs/PERFORMANCE.md.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
import transformers
from torch.nn import functional as F
from transformers.models.whisper.modeling_whisper import WhisperEncoder

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "python"), str(ROOT), str(ROOT / "benchmarks")]

import subnet  # noqa: E402
import subnet_kernels as sk  # noqa: E402
from paper_style import paper_style  # noqa: E402
from run import uniform_keep  # noqa: E402
from subnet.families.base import apply_slices  # noqa: E402


def whisper_tiny_shape(seconds: float = 1.0) -> WhisperEncoder:
    cfg = transformers.WhisperConfig(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536,
                                     num_mel_bins=80, max_source_positions=int(50 * seconds), dropout=0.0)
    torch.manual_seed(0)
    return WhisperEncoder(cfg).eval()


def mel(batch: int, model: WhisperEncoder) -> dict:
    return {"input_features": torch.randn(batch, 80, model.config.max_source_positions * 2)}


# --- kernels ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def act_inputs():
    x = torch.randn(8, 200, 1536, requires_grad=True)
    gate = (torch.rand(1536) > 0.5).float().requires_grad_(True)
    return x, gate, torch.randn(8, 200, 1536)


@pytest.mark.benchmark(group="gated_act fwd+bwd (8, 200, 1536)",
                        warmup=True, warmup_iterations=2)
@pytest.mark.parametrize("impl", ["subnet_kernels", "eager"])
def test_gated_act(benchmark, act_inputs, impl):
    x, gate, grad = act_inputs

    def run():
        y = sk.gated_act(x, None, gate, "gelu") if impl == "subnet_kernels" else F.gelu(x) * gate
        torch.autograd.grad(y, (x, gate), grad)
    benchmark(run)


# --- compaction ---------------------------------------------------------------------------------
@pytest.mark.benchmark(group="compaction of a whisper-tiny-shaped encoder, 50% of units",
                        warmup=True, warmup_iterations=2)
@pytest.mark.parametrize("impl", ["gather_compact", "index_select per tensor", "plain copy of the kept bytes"])
def test_compaction(benchmark, impl):
    model = whisper_tiny_shape(30.0)
    mm = subnet.attach_masks(model)
    keep, groups = uniform_keep(mm, 0.5), mm.groups
    mm.detach_backbone()
    small = copy.deepcopy(model)
    apply_slices(small, groups, keep)
    kept = [p.detach().clone() for p in small.parameters()]
    from subnet.families.base import plan_indices
    plan = plan_indices(groups, keep)
    params = dict(model.named_parameters())
    if impl == "gather_compact":
        benchmark.pedantic(lambda m: apply_slices(m, groups, keep), setup=lambda: ((copy.deepcopy(model),), {}),
                           rounds=5)
    elif impl == "index_select per tensor":
        def run():
            for name, dims in plan.items():
                t = params[name].detach()
                for d, idx in dims.items():
                    t = t.index_select(d, idx)
        benchmark(run)
    else:
        benchmark(lambda: torch.cat([p.reshape(-1) for p in kept]))


# --- one training step --------------------------------------------------------------------------
@pytest.mark.benchmark(group="mask-training step, whisper-tiny shape, 4 x 1 s",
                        warmup=True, warmup_iterations=2)
@pytest.mark.parametrize("variant", ["subnet, all alive", "subnet, 50% frozen (--freeze-dead)", "paper-style hooks"])
def test_training_step(benchmark, variant):
    model = whisper_tiny_shape()
    mm = paper_style(model) if variant.startswith("paper") else subnet.attach_masks(model)
    if "frozen" in variant:
        mm.set_keep(uniform_keep(mm, 0.5))
        mm.freeze_dead()
    head, x = torch.nn.Linear(384, 8), mel(4, model)

    def step():
        head(mm(**x).last_hidden_state).square().mean().backward()
        mm.zero_grad(set_to_none=True)
    benchmark(step)


# --- compact model latency ----------------------------------------------------------------------
@pytest.mark.benchmark(group="batch-1 latency, whisper-tiny shape, 1 s",
                        warmup=True, warmup_iterations=2)
@pytest.mark.parametrize("kept", [1.0, 0.5, 0.25])
def test_compact_latency(benchmark, kept):
    model = whisper_tiny_shape()
    if kept < 1:
        mm = subnet.attach_masks(model)
        model = subnet.compact(mm, uniform_keep(mm, kept))
    x = mel(1, whisper_tiny_shape())
    with torch.no_grad():
        benchmark(lambda: model(**x))
