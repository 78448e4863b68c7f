"""The command line: --help everywhere, inspect on a backbone directory and on an artifact."""
import pytest
import torch

import subnet
from subnet.cli import main
from builders import build
from checks import random_keep


def test_help(capsys):
    for argv in (["--help"], ["inspect", "--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    assert "usage: subnet" in capsys.readouterr().out


def test_inspect_backbone_and_artifact(tmp_path, capsys):
    model = build("wav2vec2")
    model.save_pretrained(tmp_path / "base")
    assert main(["inspect", str(tmp_path / "base")]) == 0
    out = capsys.readouterr().out
    assert "encoder.layers.1.attention.heads" in out and "100.0%" in out
    mm = subnet.attach_masks(model)
    keep = random_keep(mm, seed=1)
    mm.set_keep(keep)
    subnet.save(subnet.compact(mm), tmp_path / "art")
    assert main(["inspect", str(tmp_path / "art")]) == 0
    out = capsys.readouterr().out
    name = "encoder.layers.0.feed_forward.neurons"
    line = next(l for l in out.splitlines() if l.startswith(name))
    assert f"{int(keep[name].sum())} / {keep[name].numel()}" in " ".join(line.split())
