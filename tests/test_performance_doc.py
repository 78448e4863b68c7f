"""docs/PERFORMANCE.md is what benchmarks/run.py renders from the committed results, with its
hand-written blocks kept as they are."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "PERFORMANCE.md"


@pytest.fixture(scope="module")
def run():
    spec = importlib.util.spec_from_file_location("benchmarks_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_render_reproduces_the_doc(run, tmp_path):
    doc = tmp_path / "PERFORMANCE.md"
    shutil.copy(DOC, doc)
    assert run.main(["--render", "--doc", str(doc)]) == 0
    assert doc.read_text() == DOC.read_text(), "docs/PERFORMANCE.md is stale: run benchmarks/run.py --render"


def test_hand_written_blocks_are_kept_and_never_dropped(run):
    rendered = "# T\n\n| 1.00 |\n\n" + run.hand_written("a") + "\n\n" + run.hand_written("b") + "\n"
    old = run.keep_hand_written(rendered.replace("| 1.00 |", "| 9.99 |"), "")
    old = old.replace("-->\n<!-- end", "-->\nMeasured by hand: 42 ms.\n<!-- end", 1)
    new = run.keep_hand_written(rendered, old)
    assert "| 1.00 |" in new and "| 9.99 |" not in new  # the generated part is the new one
    assert new.count("Measured by hand: 42 ms.\n") == 1 and new.index("42 ms") < new.index("hand-written: b")
    with pytest.raises(SystemExit, match=r"\['a'\]"):  # a block the generator no longer places
        run.keep_hand_written(run.hand_written("b"), old)
