"""The README's API snippet runs as written."""
import os
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_snippet_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python snippet"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        scope: dict = {}
        exec(compile(blocks[0], "README.md", "exec"), scope)
    finally:
        os.chdir(cwd)
    small = scope["small"]
    assert (tmp_path / "w2v-half" / "subnet.json").is_file()
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in scope["enc"].parameters())
