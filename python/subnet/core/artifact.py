"""Artifacts on disk: compact models (safetensors + subnet.json) and mask-only artifacts.

Loading never unpickles: the architecture is rebuilt from the family's description of
the base model plus the kept unit indices, then the tensors are read from safetensors
after their names and shapes have been checked against subnet.json.
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .compact import CompactInfo, compact, rebuild
from ..families import family_named
from ..families.front_ends import front_end_from
from .hashing import weights_hash

COMPACT_FORMAT = "subnet-compact/1"
MASKS_FORMAT = "subnet-masks/1"
WEIGHTS, CONFIG = "model.safetensors", "subnet.json"


class ArtifactError(ValueError):
    """An artifact is missing, truncated, corrupted or does not fit its base model."""


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _unique_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """state_dict without the second name of tied tensors (safetensors refuses aliases)."""
    out, seen = {}, {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride())) if t.numel() else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen[key] = name
        t = t.detach().contiguous()
        if t.untyped_storage().nbytes() != t.nbytes:  # a view into compaction's one buffer
            t = t.clone()
        out[name] = t
    return out


def save(model: nn.Module, path, extra: dict | None = None) -> Path:
    """Save a compact model (from `subnet.compact`) to directory `path`."""
    info: CompactInfo | None = getattr(model, "subnet_info", None)
    if info is None:
        raise ArtifactError("subnet.save expects a model returned by subnet.compact or subnet.load "
                            "(it has no .subnet_info); to keep only the masks use subnet.save_masks")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = _unique_state(model)
    tmp = path / (WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": COMPACT_FORMAT})
    os.replace(tmp, path / WEIGHTS)
    meta = {
        "format": COMPACT_FORMAT, "family": info.family, "base": info.base, "base_hash": info.base_hash,
        "groups": {n: {"kind": info.kinds[n], "size": info.sizes[n], "keep": info.keep[n]} for n in info.keep},
        "tensors": {n: list(t.shape) for n, t in state.items()},
        "extra": {**info.extra, **(extra or {})},
    }
    _atomic_write(path / CONFIG, json.dumps(meta, indent=1).encode())
    return path


def _read_json(file: Path, fmt: str) -> dict:
    if not file.is_file():
        raise ArtifactError(f"{file}: not found (expected a {fmt} artifact)")
    try:
        meta = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{file}: not valid JSON ({e}); the file is truncated or corrupted") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ArtifactError(f"{file}: field 'format' is {got!r}, expected {fmt!r}")
    return meta


def _info_from(meta: dict, file: Path) -> CompactInfo:
    try:
        groups = meta["groups"]
        return CompactInfo(
            family=meta["family"], base=meta["base"], base_hash=meta.get("base_hash"),
            keep={n: [int(i) for i in g["keep"]] for n, g in groups.items()},
            sizes={n: int(g["size"]) for n, g in groups.items()},
            kinds={n: g["kind"] for n, g in groups.items()}, extra=meta.get("extra", {}))
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{file}: missing or malformed field {e}") from None


def read_info(path) -> CompactInfo:
    """The CompactInfo (family, base architecture and hash, kept indices, extra: head, labels,
    front end) of the artifact in directory `path`, without reading its weights."""
    file = Path(path) / CONFIG
    return _info_from(_read_json(file, COMPACT_FORMAT), file)


def load(path) -> nn.Module:
    """Load a compact model saved by `subnet.save` (architecture rebuilt, no pickle)."""
    path = Path(path)
    meta = _read_json(path / CONFIG, COMPACT_FORMAT)
    info = _info_from(meta, path / CONFIG)
    family = family_named(info.family)
    base = family.build(info.base)
    groups = family.discover(base, set(info.kinds.values()))
    if set(groups) != set(info.keep) or any(groups[n].size != info.sizes[n] for n in groups):
        raise ArtifactError(f"{path / CONFIG}: its unit groups do not match the {info.family} "
                            "architecture it describes")
    model = rebuild(family, info, base, groups)
    _load_tensors(model, path / WEIGHTS, meta["tensors"], path / CONFIG)
    if "front_end" in info.extra:  # the front end it was extracted with (e.g. CREPE's frame hop)
        model.subnet_front_end = front_end_from(info.extra["front_end"])
    return model


def _load_tensors(model: nn.Module, file: Path, shapes: dict, config_file: Path) -> None:
    if not file.is_file():
        raise ArtifactError(f"{file}: not found")
    target = model.state_dict()
    unknown = set(shapes) - set(target)
    if unknown:
        raise ArtifactError(f"{config_file}: tensors {sorted(unknown)[:3]} do not exist in the rebuilt model")
    for name, shape in shapes.items():
        if list(target[name].shape) != list(shape):
            raise ArtifactError(f"{config_file}: tensor {name} has shape {shape} but the rebuilt model "
                                f"expects {list(target[name].shape)}")
    try:
        with safe_open(str(file), framework="pt") as f:
            names = set(f.keys())
            if names != set(shapes):
                raise ArtifactError(f"{file}: holds {len(names)} tensors, {config_file.name} lists "
                                    f"{len(shapes)} (e.g. {sorted(names ^ set(shapes))[:3]})")
            loaded = {}
            for name in shapes:
                t = f.get_tensor(name)
                if list(t.shape) != list(shapes[name]):
                    raise ArtifactError(f"{file}: tensor {name} has shape {list(t.shape)}, "
                                        f"{config_file.name} says {shapes[name]}")
                loaded[name] = t
    except ArtifactError:
        raise
    except Exception as e:  # safetensors raises its own error types on bad headers/sizes
        raise ArtifactError(f"{file}: cannot be read as safetensors ({type(e).__name__}: {e}); "
                            "the file is truncated or corrupted") from None
    missing = set(target) - set(loaded)
    with torch.no_grad():
        for name, t in loaded.items():
            target[name].copy_(t)
    # tied tensors were saved once; their aliases share storage and are already filled
    leftover = [n for n in missing if not _is_alias(model, n, loaded)]
    if leftover:
        raise ArtifactError(f"{file}: tensors {sorted(leftover)[:3]} are missing")


def _is_alias(model: nn.Module, name: str, loaded: dict) -> bool:
    state = model.state_dict()
    ptr = state[name].data_ptr()
    return any(state[n].data_ptr() == ptr for n in loaded)


# --- mask-only artifacts ------------------------------------------------------------------
def _pack(mask: torch.Tensor) -> str:
    bits = mask.to(torch.uint8).numpy()
    import numpy as np
    return base64.b64encode(np.packbits(bits).tobytes()).decode()


def _unpack(text: str, size: int) -> torch.Tensor:
    import numpy as np
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:size]
    return torch.from_numpy(bits.astype(bool))


def save_masks(model, path) -> Path:
    """Save only the keep decision (+ base hash) of a MaskedModel or compact model: a few KB."""
    from .gates import MaskedModel
    if isinstance(model, MaskedModel):
        with model.gates_removed() as base:
            base_hash = weights_hash(base)
        family, keep = model.family.name, model.keep()
        kinds = {n: g.kind for n, g in model.groups.items()}
    else:
        info = getattr(model, "subnet_info", None)
        if info is None or info.base_hash is None:
            raise ArtifactError("save_masks needs a MaskedModel or a compact model with a base hash")
        family, keep, base_hash, kinds = info.family, info.keep_masks(), info.base_hash, info.kinds
    meta = {"format": MASKS_FORMAT, "family": family, "base_hash": base_hash,
            "groups": {n: {"kind": kinds[n], "size": int(m.numel()), "bits": _pack(m)} for n, m in keep.items()}}
    path = Path(path)
    if path.suffix != ".json":
        path.mkdir(parents=True, exist_ok=True)
        path = path / "masks.json"
    _atomic_write(path, json.dumps(meta).encode())
    return path


def load_masks(path, base: nn.Module, verify: bool = True) -> nn.Module:
    """Rebuild the compact model from a mask-only artifact and the base model it was made from."""
    from .. import attach_masks
    path = Path(path)
    if path.is_dir():
        path = path / "masks.json"
    meta = _read_json(path, MASKS_FORMAT)
    base_hash = weights_hash(base)
    if meta.get("base_hash") != base_hash:
        raise ArtifactError(f"{path}: made from base weights {meta.get('base_hash')}, but the given "
                            f"base model hashes to {base_hash}; load the same base model")
    try:
        groups = meta["groups"]
        kinds = tuple(sorted({g["kind"] for g in groups.values()}))
        keep = {n: _unpack(g["bits"], int(g["size"])) for n, g in groups.items()}
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{path}: missing or malformed field {e}") from None
    masked = attach_masks(base, kinds=kinds)
    try:
        if set(masked.groups) != set(keep):
            raise ArtifactError(f"{path}: its unit groups do not match the base model")
        return compact(masked, keep, verify=verify, base_hash=base_hash)
    finally:
        masked.detach_backbone()
