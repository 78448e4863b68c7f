"""The label vocabulary: sorted class names <-> indices, saved as JSON beside an artifact."""
from __future__ import annotations

import json
from pathlib import Path

import torch


class LabelVocab:
    """Sorted, duplicate-free class names; index ``i`` is the head's output ``i``."""

    def __init__(self, labels):
        self.labels: list[str] = sorted({str(x) for x in labels})
        self._index = {name: i for i, name in enumerate(self.labels)}

    @classmethod
    def from_items(cls, items) -> "LabelVocab":
        """Every label (single or multi-label) that occurs in ``items``."""
        names = set()
        for it in items:
            names.update(it.targets())
        return cls(names)

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, name) -> bool:
        return name in self._index

    def __iter__(self):
        return iter(self.labels)

    def __eq__(self, other) -> bool:
        return isinstance(other, LabelVocab) and other.labels == self.labels

    def __repr__(self) -> str:
        return f"LabelVocab({self.labels})"

    def index(self, name: str) -> int:
        """Index of ``name``; KeyError naming the known labels otherwise."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"unknown label {name!r}; the vocabulary has {len(self)}: "
                           f"{', '.join(self.labels[:20])}{' ...' if len(self) > 20 else ''}") from None

    def multi_hot(self, names) -> torch.Tensor:
        """float32 (len(self),) with 1 at each name's index."""
        out = torch.zeros(len(self), dtype=torch.float32)
        for n in names:
            out[self.index(n)] = 1.0
        return out

    def to_json(self) -> dict:
        return {"labels": self.labels}

    @classmethod
    def from_json(cls, data: dict) -> "LabelVocab":
        return cls(data["labels"])

    def save(self, path) -> None:
        """Write ``{"labels": [...]}`` to ``path``."""
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path) -> "LabelVocab":
        return cls.from_json(json.loads(Path(path).read_text()))
