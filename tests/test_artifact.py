"""Artifacts: save -> load in a fresh process, size bound, clear errors, mask-only artifacts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import subnet
from builders import build
from checks import inputs_for, random_keep, run


def _compact(kind, seed=0, size="small"):
    model = build(kind, size)
    mm = subnet.attach_masks(model)
    mm.set_keep(random_keep(mm, seed=seed))
    return model, mm, subnet.compact(mm)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wav2vec2", "wavlm", "whisper", "torch-seq-prenorm"])
def test_save_load_fresh_process_identical(kind, tmp_path):
    model, mm, small = _compact(kind, seed=1)
    subnet.save(small, tmp_path / "art")
    inputs = inputs_for(kind, model, seed=3)
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = run(kind, small, inputs)
    script = (
        "import sys, torch, subnet\n"
        f"m = subnet.load({str(tmp_path / 'art')!r})\n"
        f"inputs = torch.load({str(tmp_path / 'inputs.pt')!r})\n"
        "with torch.no_grad():\n"
        "    out = m(**inputs)\n"
        "out = out if isinstance(out, torch.Tensor) else out.last_hidden_state\n"
        f"torch.save(out, {str(tmp_path / 'out.pt')!r})\n"
        "print(type(m).__name__)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(subnet.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == type(model).__name__
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


@pytest.mark.parametrize("kind", ["wav2vec2", "whisper"])
def test_weights_file_holds_only_kept_parameters(kind, tmp_path):
    _, _, small = _compact(kind, seed=2)
    subnet.save(small, tmp_path)
    kept = sum(p.numel() for p in small.parameters())
    assert (tmp_path / "model.safetensors").stat().st_size <= kept * 4 + 64 * 1024


def test_truncated_or_corrupted_files_give_clear_errors(tmp_path):
    _, _, small = _compact("wav2vec2", seed=3)
    subnet.save(small, tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(subnet.ArtifactError, match="model.safetensors.*truncated or corrupted"):
        subnet.load(tmp_path)
    weights.write_bytes(b"\x00" * 100)
    with pytest.raises(subnet.ArtifactError, match="model.safetensors"):
        subnet.load(tmp_path)
    weights.write_bytes(data)
    subnet.load(tmp_path)  # intact again

    cfg = tmp_path / "subnet.json"
    text = cfg.read_text()
    cfg.write_text(text[: len(text) // 2])
    with pytest.raises(subnet.ArtifactError, match="subnet.json: not valid JSON"):
        subnet.load(tmp_path)
    meta = json.loads(text)
    name = next(iter(meta["tensors"]))
    meta["tensors"][name] = [1, 2, 3]
    cfg.write_text(json.dumps(meta))
    with pytest.raises(subnet.ArtifactError, match=f"tensor {name} has shape"):
        subnet.load(tmp_path)
    meta = json.loads(text)
    meta["format"] = "something-else"
    cfg.write_text(json.dumps(meta))
    with pytest.raises(subnet.ArtifactError, match="field 'format'"):
        subnet.load(tmp_path)
    with pytest.raises(subnet.ArtifactError, match="not found"):
        subnet.load(tmp_path / "nowhere")


@pytest.mark.slow
def test_mask_only_artifact_base_size(tmp_path):
    model, mm, small = _compact("wav2vec2", seed=4, size="base")
    path = subnet.save_masks(mm, tmp_path / "masks")
    assert path.stat().st_size < 64 * 1024
    mm.detach_backbone()
    rebuilt = subnet.load_masks(path, model)
    a, b = small.state_dict(), rebuilt.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mask_only_artifact_refuses_another_base(tmp_path):
    model, mm, small = _compact("torch-batch", seed=5)
    path = subnet.save_masks(small, tmp_path / "m.json")
    other = build("torch-batch")
    with torch.no_grad():
        other.layers[0].linear1.weight[0, 0] += 1e-3
    with pytest.raises(subnet.ArtifactError, match="base model hashes to"):
        subnet.load_masks(path, other)
    rebuilt = subnet.load_masks(path, build("torch-batch"))
    assert all(torch.equal(small.state_dict()[k], v) for k, v in rebuilt.state_dict().items())
