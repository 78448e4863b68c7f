"""Length-bucketed batches and the padding collate."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler


class BucketBatchSampler(Sampler):
    """Batches of indices of similar length, so little of each batch is padding.

    Each epoch (``set_epoch``): shuffle (seeded by ``seed`` and the epoch), sort each window of
    ``bucket_batches`` global batches by length, cut it into global batches of
    ``batch_size * num_replicas`` and shuffle their order. Rank ``r`` takes every
    ``num_replicas``-th index of each global batch, so N ranks with batch B see exactly the
    clips one process sees with batch N*B (the last global batch is topped up from the start
    of the epoch when ranks would otherwise differ in length).
    """

    def __init__(self, lengths, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 bucket_batches: int = 50, num_replicas: int = 1, rank: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.bucket_batches, self.num_replicas, self.rank = bucket_batches, num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[np.ndarray]:
        n, g = len(self.lengths), self.batch_size * self.num_replicas
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        window = g * self.bucket_batches
        batches = []
        for s in range(0, n, window):
            chunk = order[s:s + window]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + g] for i in range(0, len(chunk), g)]
        if batches and len(batches[-1]) < g:
            if self.drop_last:
                batches.pop()
            elif len(batches[-1]) % self.num_replicas:
                short = self.num_replicas - len(batches[-1]) % self.num_replicas
                batches[-1] = np.concatenate([batches[-1], np.resize(order, short)])
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self):
        for gb in self._global_batches():
            yield gb[self.rank::self.num_replicas].tolist()

    def __len__(self) -> int:
        n, g = len(self.lengths), self.batch_size * self.num_replicas
        return n // g if self.drop_last else -(-n // g)


def collate(examples: list[dict]) -> dict:
    """Pad a list of dataset examples into a batch.

    Returns ``waves`` (B, T) float32 zero-padded, ``lengths`` (B,) int64, ``attention_mask``
    (B, T) bool (True on real samples), ``index`` (B,), ``path`` (list) and the targets:
    ``label`` (B,) int64, ``target`` (B, C) float32 multi-hot, or ``text`` (list of str).
    ``skipped`` lists the Problems of examples dropped at decode time (skip_bad datasets);
    B may then be 0.
    """
    skipped = [e["skipped"] for e in examples if "skipped" in e]
    good = [e for e in examples if "skipped" not in e]
    lengths = torch.tensor([e["wave"].shape[-1] for e in good], dtype=torch.long)
    t = int(lengths.max()) if len(good) else 0
    waves = torch.zeros(len(good), t, dtype=torch.float32)
    for i, e in enumerate(good):
        waves[i, :e["wave"].shape[-1]] = e["wave"]
    batch = {"waves": waves, "lengths": lengths,
             "attention_mask": torch.arange(t)[None, :] < lengths[:, None],
             "index": torch.tensor([e["index"] for e in good], dtype=torch.long),
             "path": [e["path"] for e in good], "skipped": skipped}
    if good and "label" in good[0]:
        batch["label"] = torch.tensor([e["label"] for e in good], dtype=torch.long)
    if good and "target" in good[0]:
        batch["target"] = torch.stack([e["target"] for e in good])
    if good and "text" in good[0]:
        batch["text"] = [e["text"] for e in good]
    return batch
