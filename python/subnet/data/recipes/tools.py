"""External tools the recipes call: found, or an error with the exact install command."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# file or binary -> the Debian package that ships it
PACKAGE_OF = {
    "/usr/share/sounds/sf2/FluidR3_GM.sf2": "fluid-soundfont-gm",
    "/usr/share/sounds/sf2/TimGM6mb.sf2": "timgm6mb-soundfont",
}


class ToolMissing(RuntimeError):
    """A binary, voice or data file a recipe needs is not installed; ``.packages`` to install."""

    def __init__(self, what: str, packages: list[str]):
        self.packages = list(packages)
        super().__init__(f"{what} is not installed; install it with:\n"
                         f"    apt-get install -y {' '.join(self.packages)}\n"
                         f"(or run .ci/install-audio.sh, which installs every recipe's packages)")


def require_binary(name: str, package: str) -> str:
    """Full path of the executable ``name``; ToolMissing naming ``package`` otherwise."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"the program {name!r}", [package])
    return path


def require_file(path, package: str | None = None) -> Path:
    """``path`` if it exists; ToolMissing naming its Debian package otherwise."""
    path = Path(path)
    if not path.exists():
        pkg = package or PACKAGE_OF.get(str(path))
        raise ToolMissing(f"{path}", [pkg] if pkg else ["(the package that provides it)"])
    return path


def run(cmd: list[str], input: str | None = None) -> str:
    """Run ``cmd``; its stdout, or RuntimeError with the command and its stderr."""
    res = subprocess.run(cmd, input=input, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr.strip()[-2000:]}")
    return res.stdout
