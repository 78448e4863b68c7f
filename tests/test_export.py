"""`subnet export` (subnet.export): ONNX (run by onnxruntime) and TorchScript on tiny artifacts."""
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import subnet
from subnet.cli import main
from builders import build
from subnet import export as ex
from subnet.training.tasks import task_named

ort = pytest.importorskip("onnxruntime")


def _compact(kind):
    model = build(kind)
    mm = subnet.attach_masks(model)
    gen = torch.Generator().manual_seed(0)
    keep = {n: torch.rand(g.size, generator=gen) < 0.6 for n, g in mm.groups.items()}
    for n, g in mm.groups.items():  # conv groups must keep one unit
        keep[n][0] = True
    mm.set_keep(keep)
    return model, subnet.compact(mm)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Encoder-only artifacts, and a pipeline artifact (encoder + front end + head) like
    subnet extract writes."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for kind in ("wav2vec2", "whisper"):
        base, small = _compact(kind)
        out[kind] = subnet.save(small, root / kind)
    base, small = _compact("wav2vec2")
    torch.manual_seed(0)
    width, n_states = small.config.hidden_size, small.config.num_hidden_layers + 1
    head = task_named("classify").head(width, n_states, 5).eval()
    extra = {"head": {"task": "classify", "width": width, "n_states": n_states, "n_out": 5, "layer": "weighted"},
             "labels": list("abcde"), "front_end": subnet.family_of(small).front_end(small).describe()}
    path = subnet.save(small, root / "pipe", extra=extra)
    save_file(head.state_dict(), str(path / "head.safetensors"))
    out["pipeline"] = path
    return out


@pytest.mark.parametrize("kind", ["wav2vec2", "whisper"])
def test_onnx_encoder_runs_in_onnxruntime(artifacts, kind, tmp_path, capsys):
    path = tmp_path / "enc.onnx"
    seconds = [] if kind == "whisper" else ["--seconds", "0.25"]  # Whisper: its whole window
    assert main(["export", str(artifacts[kind]), "--out", str(path), *seconds]) == 0
    assert "matches PyTorch" in capsys.readouterr().out
    # independent of export's own check: onnxruntime on a new batch size vs the loaded model
    model = subnet.load(artifacts[kind])
    if kind == "whisper":
        inputs = {"input_features": torch.randn(4, 16, 26)}
    else:
        inputs = {"input_values": torch.randn(4, 4000), "attention_mask": torch.ones(4, 4000, dtype=torch.long)}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    got = session.run(None, {k: v.numpy() for k, v in inputs.items() if k in names})[0]
    with torch.no_grad():
        ref = model(**inputs).last_hidden_state.numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_torchscript_encoder(artifacts, tmp_path):
    r = ex.export(artifacts["whisper"], "torchscript", tmp_path / "enc.pt")
    assert r["bytes"] == (tmp_path / "enc.pt").stat().st_size > 0 and r["relative_error"] <= 1e-4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still shipped
        scripted = torch.jit.load(str(tmp_path / "enc.pt"))
    x = torch.randn(1, 16, 26)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), subnet.load(artifacts["whisper"])(input_features=x).last_hidden_state,
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_pipeline_export(artifacts, fmt):
    r = ex.export(artifacts["pipeline"], fmt, pipeline=True, seconds=0.25)
    assert r["path"].endswith("pipeline" + ex.FORMATS[fmt]) and r["relative_error"] <= 1e-4
    assert list(r["inputs"]) == ["input_values", "attention_mask", "frames"] and r["output"] == [ex.CHECK_BATCH, 5]


def test_mismatch_is_an_error(artifacts, tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "relative_error", lambda out, ref: 1.0)
    with pytest.raises(ex.ExportError, match="differs from PyTorch"):
        ex.export(artifacts["whisper"], "onnx", tmp_path / "bad.onnx")


def test_unknown_format(artifacts):
    with pytest.raises(ValueError, match="unknown format"):
        ex.export(artifacts["whisper"], "tflite")


def test_both_commands_parse_their_options(capsys):
    from subnet.cli import bench, export, parser
    p = parser()
    args = p.parse_args(["export", "DIR", "--format", "torchscript", "--pipeline"])
    assert args.func is export.run and args.format == "torchscript" and args.pipeline
    args = p.parse_args(["bench", "SRC", "--batch", "1,32", "--seconds", "30", "--dtype", "bf16"])
    assert args.func is bench.run and args.batch == [1, 32] and args.seconds == [30.0] and args.dtype == "bf16"
    for command in ("bench", "export"):
        with pytest.raises(SystemExit):
            p.parse_args([command, "--help"])
        assert "usage: subnet " + command in capsys.readouterr().out
