"""AudioDataset: checked items -> mono waveforms at the backbone's rate, with targets."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from .audio import AudioDecodeError, decode
from .batching import BucketBatchSampler, collate
from .crop import CropPad, clip_generator
from .errors import BadInputError
from .items import read_items
from .validate import Checked, validate
from .vocab import LabelVocab

log = logging.getLogger(__name__)


class AudioDataset(Dataset):
    """Clips of one dataset split, validated up front.

    ``ds[i]`` is a dict: ``wave`` (T,) float32 mono at ``sample_rate``, ``index``, ``path`` and
    the target (``label`` int, ``target`` multi-hot, or ``text``). With ``skip_bad`` a file that
    fails at decode time (e.g. NaN samples in a file whose header was fine) gives
    ``{"skipped": Problem, ...}`` which :func:`collate` drops and reports in ``batch["skipped"]``.
    """

    def __init__(self, checked: Checked, sample_rate: int = 16000, vocab: LabelVocab | None = None,
                 crop: CropPad = CropPad(), seed: int = 0, skip_bad: bool = False, name: str = ""):
        self.items, self.checked = checked.items, checked
        self.summary = checked.summary
        self.sample_rate, self.crop, self.seed, self.skip_bad, self.name = sample_rate, crop, seed, skip_bad, name
        self.kind = self.items[0].kind if self.items else "label"
        if vocab is None and self.kind != "text":
            vocab = LabelVocab.from_items(self.items)
        self.vocab = vocab
        self.epoch = 0
        self.notes = conversion_notes(checked, sample_rate)

    @classmethod
    def from_source(cls, source, sample_rate: int = 16000, split: str | None = None,
                    vocab: LabelVocab | None = None, max_seconds: float | None = None, train: bool = False,
                    pad: bool = False, seed: int = 0, skip_bad: bool = False, progress: bool = True,
                    keep=None, min_seconds: float = 0.0) -> "AudioDataset":
        """Read, filter by ``split`` and validate a folder tree or manifest.

        ``train`` selects random crops (else centre crops) when clips exceed ``max_seconds``;
        ``vocab`` (e.g. the training set's) makes labels outside it errors; ``keep(item)`` selects
        clips by any manifest field (``lambda it: it.field("language") == "en"``); a clip shorter
        than ``min_seconds`` (what the encoder's front end needs) is a bad input. Raises
        :class:`BadInputError` naming every bad file and manifest line unless ``skip_bad``.
        Files at another sample rate are resampled and multi-channel files mixed down to mono,
        never silently: ``ds.notes`` says how many (also logged).
        """
        items, problems = read_items(source)
        if split is not None:
            splits = sorted({it.split for it in items if it.split})
            items = [it for it in items if it.split == split]
            # a folder tree's problems belong to the split folder they are in
            problems = [p for p in problems if p.line is not None or split in Path(p.file).parts]
            if not items:
                raise ValueError(f"{source} has no clips of split {split!r}; its splits: "
                                 f"{', '.join(splits) or 'none (omit split)'}")
        if keep is not None:
            items = [it for it in items if keep(it)]
        checked = validate(items, vocab, problems, skip_bad=skip_bad, progress=progress, source=str(source),
                           min_seconds=min_seconds)
        if not checked.items:
            raise ValueError(f"{source}: no usable clips left ({checked.summary})")
        crop = CropPad(max_seconds, "random" if train else "center", pad)
        ds = cls(checked, sample_rate, vocab, crop, seed, skip_bad, name=str(source))
        for note in ds.notes:
            log.info("%s: %s", source, note)
        return ds

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Random crops depend on (seed, epoch, index) only."""
        self.epoch = epoch

    def lengths(self) -> list[int]:
        """Each clip's length in samples after resampling and cropping (for bucketing)."""
        return [self.crop.length(round(n * self.sample_rate / r), self.sample_rate)
                for n, r in zip(self.checked.frames, self.checked.rates)]

    def target(self, i: int) -> dict:
        it = self.items[i]
        if self.kind == "label":
            return {"label": self.vocab.index(it.label)}
        if self.kind == "labels":
            return {"target": self.vocab.multi_hot(it.labels)}
        return {"text": it.text}

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        base = {"index": i, "path": str(it.path)}
        try:
            wave = decode(it.path, self.sample_rate)
        except (AudioDecodeError, OSError) as e:
            problem = it.problem(getattr(e, "reason", "corrupt"), getattr(e, "detail", str(e)))
            if self.skip_bad:
                return {**base, "skipped": problem}
            raise BadInputError([problem], self.name) from None
        gen = clip_generator(self.seed, self.epoch, i) if self.crop.mode == "random" else None
        return {**base, "wave": self.crop(wave, self.sample_rate, gen), **self.target(i)}

    def loader(self, batch_size: int, shuffle: bool | None = None, num_workers: int = 0, drop_last: bool = False,
               num_replicas: int = 1, rank: int = 0, **kwargs) -> DataLoader:
        """A DataLoader over length-bucketed batches (shuffled when the crop is random).

        Call ``loader.batch_sampler.set_epoch(e)`` and ``dataset.set_epoch(e)`` each epoch.
        """
        shuffle = self.crop.mode == "random" if shuffle is None else shuffle
        sampler = BucketBatchSampler(self.lengths(), batch_size, shuffle=shuffle, seed=self.seed, drop_last=drop_last,
                                     num_replicas=num_replicas, rank=rank)
        return DataLoader(self, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers, **kwargs)


def conversion_notes(checked: Checked, sample_rate: int) -> list[str]:
    """What decoding changes in the files: resampling (per source rate) and mixing down."""
    notes = []
    for rate, n in sorted(Counter(r for r in checked.rates if r != sample_rate).items()):
        notes.append(f"{n} file{'s' if n != 1 else ''} at {rate} Hz resampled to {sample_rate} Hz")
    multi = sum(c > 1 for c in checked.channels)
    if multi:
        notes.append(f"{multi} multi-channel file{'s' if multi != 1 else ''} mixed down to mono")
    return notes


def load_dataset(source, **kwargs) -> AudioDataset:
    """Shorthand for :meth:`AudioDataset.from_source`."""
    return AudioDataset.from_source(source, **kwargs)
