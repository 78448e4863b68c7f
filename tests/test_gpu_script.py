"""benchmarks/gpu.sh stays runnable: its CPU variant (tiny shapes, no build) on a few steps."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_on_the_cpu(tmp_path):
    env = dict(os.environ, DEVICE="cpu", SMALL="1", PYTHON=sys.executable, RESULTS=str(tmp_path),
               STEPS="subnet-bench extract-on-device")
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh")], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    names = {p.name for p in tmp_path.iterdir()}
    prefix = next(n for n in names if n.endswith("-environment.txt"))[:-len("environment.txt")]
    assert prefix.startswith("gpu-cpu-")
    for kept in (50, 25):  # compact vs dense, with a ratio for every batch size
        runs = json.loads((tmp_path / f"{prefix}subnet-bench-whisper-base-{kept}.json").read_text())["runs"]
        assert [r["batch"] for r in runs] == [1, 4] and all(r["comparison"]["ideal_speedup"] > 1 for r in runs)
    suite = ET.parse(tmp_path / f"{prefix}extract-on-device.xml").getroot().find("testsuite")
    assert suite.get("tests") == "1" and suite.get("failures") == "0" and suite.get("errors") == "0"
    # only the steps asked for ran, and the summary says so
    assert not any("training-step" in n or "kernel-tests" in n for n in names), names
    assert "0 step(s) failed" in r.stdout
    for p in tmp_path.iterdir():  # no paths of this machine in the results (the environment file aside)
        if "environment" not in p.name:
            text = p.read_text()
            assert str(ROOT) not in text and "/tmp/" not in text and "site-packages/" not in text.replace(
                "<site-packages>/", ""), p.name
