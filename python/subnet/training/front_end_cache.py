"""The encoder's conv front end, computed once per clip when no gate in it trains.

When no conv unit is gated (`--kinds head ffn`, or a family whose front end has no gated
channels), the modules that turn the model input into the first transformer layer's input
(Whisper's conv1/conv2, wav2vec2's feature extractor) are frozen functions of the clip: the
same clip gives the same output at every epoch. `FrontEndCache` wraps those modules; while
`Pipeline.encode` runs a batch inside `cache.clips(...)`, each wrapped module returns its
stored per-clip outputs when every clip of the batch has them, and otherwise computes the
batch and stores them. Keys are the clip's samples and the padded batch width (unless the
front end pads every clip to one length), exactly as for `EncoderCache`.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from .encoder_cache import clip_keys
from ..families.base import override_forward


def _per_clip(out, n: int):
    """`out` (a tensor, or a tuple of tensors / None, batch first) as n per-clip tuples; None
    when its form is not one of those."""
    parts = out if isinstance(out, tuple) else (out,)
    if not all(p is None or (isinstance(p, torch.Tensor) and p.dim() and p.shape[0] == n) for p in parts):
        return None
    return [tuple(None if p is None else p[i].detach().clone() for p in parts) for i in range(n)]


def _requires_grad(out) -> bool:
    return any(isinstance(p, torch.Tensor) and p.requires_grad for p in (out if isinstance(out, tuple) else (out,)))


def _batch(clips: list, as_tuple: bool):
    parts = tuple(None if clips[0][j] is None else torch.stack([c[j] for c in clips])
                  for j in range(len(clips[0])))
    return parts if as_tuple else parts[0]


class FrontEndCache:
    """Per-clip outputs of the front-end modules, up to `max_bytes` (then computed, not stored)."""

    def __init__(self, max_bytes: int = 2 << 30):
        self.max_bytes = max_bytes
        self.store: dict[tuple[str, bytes], tuple[tuple, bool]] = {}  # (per-clip parts, output was a tuple)
        self.bytes = self.hits = self.misses = 0
        self._batch: tuple | None = None  # (waves, lengths, width_matters) inside `clips`
        self._keys: list[bytes] | None = None  # their keys, hashed when a wrapped module first asks
        self._undo = []

    @staticmethod
    def applies(model: nn.Module, paths: list[str], groups) -> bool:
        """True when `paths` exist and no unit group slices a tensor inside them."""
        if not paths:
            return False
        for name in paths:
            model.get_submodule(name)
        inside = [p + "." for p in paths]
        return not any(sl.param.startswith(pre) for g in groups.values() for sl in g.slices for pre in inside)

    def install(self, model: nn.Module, paths: list[str]) -> None:
        """Wrap the forward of each module at `paths` (relative to `model`). Copies of `model`
        (the shrunk one that skips frozen units) carry the wrappers and share the store."""
        cache = self
        for path in paths:
            def forward(module, *args, _path=path, **kwargs):
                return cache._call(_path, module, args, kwargs)
            self._undo.append(override_forward(model.get_submodule(path), forward))

    def remove(self) -> None:
        for undo in self._undo:
            undo()
        self._undo = []

    @contextlib.contextmanager
    def clips(self, waves: torch.Tensor, lengths: torch.Tensor, width_matters: bool):
        """Within this block the wrapped modules see the batch of `waves` (one key per clip)."""
        self._batch, self._keys = (waves, lengths, width_matters), None
        try:
            yield
        finally:
            self._batch = self._keys = None

    def _call(self, path: str, module: nn.Module, args, kwargs):
        compute = type(module).forward
        if (self._batch is None or any(p.requires_grad for p in module.parameters())
                or (module.training and any(isinstance(m, nn.Dropout) for m in module.modules()))):
            return compute(module, *args, **kwargs)  # and no clip is hashed (a trained front end)
        if self._keys is None:  # once per batch, shared by every wrapped module
            self._keys = clip_keys(b"front end", *self._batch)
        keys = self._keys
        ids = [(path, k) for k in keys]
        if all(i in self.store for i in ids):
            self.hits += len(ids)
            return _batch([self.store[i][0] for i in ids], as_tuple=self.store[ids[0]][1])
        self.misses += len(ids)
        out = compute(module, *args, **kwargs)
        clips = None if _requires_grad(out) else _per_clip(out, len(keys))
        if clips is not None:
            for i, clip in zip(ids, clips):
                size = sum(p.numel() * p.element_size() for p in clip if p is not None)
                if i in self.store or self.bytes + size > self.max_bytes:
                    continue
                self.store[i] = (clip, isinstance(out, tuple))
                self.bytes += size
        return out
