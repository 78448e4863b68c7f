"""Seeded assignment of whole groups (voices, programs) to train / valid / test."""
from __future__ import annotations

import numpy as np


def split_groups(keys, seed: int, valid: float = 0.1, test: float = 0.1) -> dict:
    """key -> "train" | "valid" | "test", deterministic for ``seed``; with 3+ keys, valid and
    test get at least one key each, so no split is empty."""
    keys = sorted(keys)
    order = np.random.default_rng([seed, 7]).permutation(len(keys))
    n = len(keys)
    n_valid = max(1, round(valid * n)) if n >= 3 and valid > 0 else 0
    n_test = max(1, round(test * n)) if n >= 3 and test > 0 else 0
    out = {}
    for rank, i in enumerate(order):
        out[keys[i]] = "valid" if rank < n_valid else "test" if rank < n_valid + n_test else "train"
    return out
