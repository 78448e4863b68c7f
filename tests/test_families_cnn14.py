"""CNN14 (PANNs, CLAP 2022's audio encoder): a model class compacted by the conv-stack family."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import subnet
from subnet.families.cnn14 import Cnn14
from builders import CNN14_TINY, build_cnn14_tiny
from checks import check_gradients, check_keep, check_model, random_keep

def test_tiny_full_battery(tmp_path):
    wave = torch.randn(3, 8000 + 137, generator=torch.Generator().manual_seed(0))  # odd length
    mm = check_model(build_cnn14_tiny(), wave, tmp_path)
    # all twelve convs are units; the last one's channels are fc1's columns after global pooling
    assert list(mm.groups) == [f"conv_block{b}.conv{c}" for b in range(1, 7) for c in (1, 2)]
    last = mm.groups["conv_block6.conv2"].slices
    assert {(s.param, s.dim) for s in last} == {
        ("conv_block6.conv2.weight", 0), ("conv_block6.bn2.weight", 0), ("conv_block6.bn2.bias", 0),
        ("conv_block6.bn2.running_mean", 0), ("conv_block6.bn2.running_var", 0), ("fc1.weight", 1)}


def test_gates_get_gradients():
    check_gradients(build_cnn14_tiny(), torch.randn(2, 8000))


def test_front_end_is_log_mel():
    model = Cnn14(**CNN14_TINY).eval()
    tone = torch.sin(2 * torch.pi * 1000 * torch.arange(8000) / 8000)[None]
    mel = model.logmel(tone)
    assert mel.shape == (1, 101, 32)
    assert mel[0, 50].argmax() == model.logmel.mel.argmax(1)[round(1000 / 8000 * 512)]  # the 1 kHz band


@pytest.mark.slow
def test_load_in_a_fresh_process(tmp_path):
    model = build_cnn14_tiny().eval()
    mm = subnet.attach_masks(model)
    small = subnet.compact(mm, random_keep(mm, seed=3))
    subnet.save(small, tmp_path / "art")
    wave = torch.randn(2, 8000)
    torch.save(wave, tmp_path / "wave.pt")
    script = (f"import torch, subnet\nm = subnet.load({str(tmp_path / 'art')!r})\n"
              f"torch.save(m(torch.load({str(tmp_path / 'wave.pt')!r}))['embedding'], {str(tmp_path / 'out.pt')!r})\n"
              "print(type(m).__name__)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(subnet.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "Cnn14"
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "out.pt"), small(wave)["embedding"])


def test_base_size_random_masks():
    """PANNs' sizes (80M parameters, 32 kHz, 64 mels); half a second of audio."""
    torch.manual_seed(0)
    model = Cnn14().eval()
    model.subnet_probe_shape = (16000,)
    assert sum(p.numel() for p in model.parameters()) == 80_753_615
    mm = subnet.attach_masks(model)
    keep = random_keep(mm, seed=13)
    mm.detach_backbone()
    check_keep(model, torch.randn(1, 16000), keep)
