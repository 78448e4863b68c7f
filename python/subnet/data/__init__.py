"""Datasets for extraction: folder trees and manifests, validated up front, bucketed batches.

    from subnet.data import load_dataset
    train = load_dataset("kws/manifest.jsonl", split="train", max_seconds=1.0, train=True)
    test = load_dataset("digits/manifest.jsonl", vocab=train.vocab)   # same label indices
    for batch in train.loader(batch_size=32):   # waves (B, T), attention_mask, lengths, label
        ...

Dataset recipes (``subnet data build RECIPE --out DIR``) live in :mod:`subnet.data.recipes`.
"""
from __future__ import annotations

from .audio import AudioDecodeError, decode, mixdown, resample
from .batching import BucketBatchSampler, collate
from .crop import CropPad
from .dataset import AudioDataset, load_dataset
from .errors import BadInputError, Problem, SkipSummary
from .items import Item, read_items
from .validate import Checked, validate
from .vocab import LabelVocab

__all__ = ["AudioDataset", "load_dataset", "LabelVocab", "CropPad", "BucketBatchSampler", "collate",
           "BadInputError", "Problem", "SkipSummary", "Item", "read_items", "validate", "Checked",
           "decode", "mixdown", "resample", "AudioDecodeError"]
