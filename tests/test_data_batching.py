"""Length-bucketed batches, padding masks, rank sharding."""
from __future__ import annotations

import numpy as np
import soundfile as sf
import torch

from subnet.data import BucketBatchSampler, collate, load_dataset


def test_buckets_cover_every_index_once_and_group_lengths():
    lengths = np.random.default_rng(0).integers(100, 10000, size=103)
    s = BucketBatchSampler(lengths, batch_size=8, seed=1, bucket_batches=4)
    batches = list(s)
    assert len(batches) == len(s) == 13
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(103))
    # within a batch lengths are close: padding far below an unsorted batch's
    waste = sum(max(lengths[b]) * len(b) - sum(lengths[b]) for b in batches)
    rand = [list(range(i, min(i + 8, 103))) for i in range(0, 103, 8)]
    assert waste < 0.5 * sum(max(lengths[b]) * len(b) - sum(lengths[b]) for b in rand)


def test_buckets_epochs_and_determinism():
    lengths = list(range(50))
    a, b = BucketBatchSampler(lengths, 4, seed=3), BucketBatchSampler(lengths, 4, seed=3)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(BucketBatchSampler(lengths, 4, shuffle=False, bucket_batches=100))[0] == [0, 1, 2, 3]
    assert len(list(BucketBatchSampler(lengths, 4, drop_last=True))) == 12


def test_ranks_split_the_doubled_batch():
    lengths = np.random.default_rng(1).integers(1, 1000, size=37)
    one = list(BucketBatchSampler(lengths, 8, seed=5))
    r0 = list(BucketBatchSampler(lengths, 4, seed=5, num_replicas=2, rank=0))
    r1 = list(BucketBatchSampler(lengths, 4, seed=5, num_replicas=2, rank=1))
    assert len(r0) == len(r1) == len(one)
    for full, a, b in zip(one[:-1], r0, r1):
        assert sorted(full) == sorted(a + b)
    assert len(r0[-1]) == len(r1[-1])  # topped up: ranks never differ in step count or size


def test_collate_pads_and_masks():
    ex = [{"wave": torch.ones(n), "index": i, "path": f"{i}.wav", "label": i} for i, n in enumerate([3, 5, 1])]
    b = collate(ex)
    assert b["waves"].shape == (3, 5) and b["lengths"].tolist() == [3, 5, 1]
    assert b["attention_mask"].sum(1).tolist() == [3, 5, 1]
    assert torch.equal(b["waves"] != 0, b["attention_mask"])
    assert b["label"].tolist() == [0, 1, 2] and b["skipped"] == []


def test_loader_end_to_end(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i, sec in enumerate([0.1, 0.3, 0.2, 0.6]):
            sf.write(tmp_path / cls / f"{i}.wav", np.full(int(16000 * sec), 0.1, np.float32), 16000)
    ds = load_dataset(tmp_path, max_seconds=0.5, train=True, progress=False)
    seen = 0
    for batch in ds.loader(batch_size=3):
        assert batch["waves"].shape[1] == int(batch["lengths"].max()) <= 8000
        assert torch.equal(batch["attention_mask"].sum(1), batch["lengths"])
        seen += len(batch["index"])
    assert seen == 8
