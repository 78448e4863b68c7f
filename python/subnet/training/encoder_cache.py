"""Hidden states of a frozen encoder with fixed gates, computed once per clip.

A linear probe, the random and importance baselines and any run with `train_gates=False` show
the encoder the same clips epoch after epoch while nothing in it changes, so the encoder's
output for a clip is a pure function of (the clip's samples, the padded batch width unless the
front end pads every clip to one length, the gate decision). `EncoderCache` keys each clip by
exactly that and returns the stored hidden states on a hit: the step then costs the head alone.
The gate decision is part of the key, so
`MaskedModel.set_keep` (importance pruning mid-run) or restoring another checkpoint can never
return stale states; it is only consulted while no encoder parameter and no gate logit
requires a gradient.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import torch


def clip_keys(state: bytes, waves: torch.Tensor, lengths: torch.Tensor, width_matters: bool) -> list[bytes]:
    """One key per clip: a digest of `state`, its samples and (when it matters) the padded width."""
    keys = []
    for wave, n in zip(waves, lengths.tolist()):
        h = hashlib.blake2b(state, digest_size=16)
        h.update(int(waves.shape[1] if width_matters else -1).to_bytes(8, "little", signed=True))
        h.update(wave[:n].detach().cpu().contiguous().numpy().tobytes())
        keys.append(h.digest())
    return keys


class EncoderCache:
    """Per-clip hidden states, up to `max_bytes` (then new clips are computed, not stored)."""

    def __init__(self, state_key: Callable[[], bytes], max_bytes: int = 4 << 30):
        self.state_key, self.max_bytes = state_key, max_bytes
        self.store: dict[bytes, tuple[torch.Tensor, ...]] = {}
        self.bytes = self.hits = self.misses = 0

    def states(self, encode: Callable, waves: torch.Tensor, lengths: torch.Tensor,
               width_matters: bool = True) -> tuple[torch.Tensor, ...]:
        """`encode(waves, lengths)`'s hidden states, from the store for the clips in it.
        `width_matters`: the batch's padded width is part of the key (False when the front end
        pads every clip to one fixed length anyway). When it does not, only the clips not in the
        store are encoded (a clip's states then do not depend on its batch); when it does, a
        batch with any clip missing is encoded whole."""
        keys = clip_keys(self.state_key(), waves, lengths, width_matters)
        missing = [i for i, k in enumerate(keys) if k not in self.store]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if not missing:
            return self._stack([self.store[k] for k in keys])
        if width_matters or len(missing) == len(keys):
            states = encode(waves, lengths)
            self._keep([keys[i] for i in missing], [tuple(s[i] for s in states) for i in missing])
            return states
        idx = torch.tensor(missing, device=waves.device)
        new = encode(waves[idx], lengths[idx])
        computed = {i: tuple(s[j] for s in new) for j, i in enumerate(missing)}
        self._keep([keys[i] for i in missing], list(computed.values()))
        return self._stack([computed[i] if i in computed else self.store[k] for i, k in enumerate(keys)])

    @staticmethod
    def _stack(per_clip: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        return tuple(torch.stack([c[layer] for c in per_clip]) for layer in range(len(per_clip[0])))

    def _keep(self, keys: list[bytes], clips: list[tuple[torch.Tensor, ...]]) -> None:
        """Store each clip's states (copies) while the store has room."""
        for k, clip in zip(keys, clips):
            if k in self.store:
                continue
            size = sum(s.numel() * s.element_size() for s in clip)
            if self.bytes + size > self.max_bytes:
                break
            self.store[k] = tuple(s.detach().clone() for s in clip)
            self.bytes += size
