"""Tasks: what a head predicts, how it is trained and scored, and how its predictions read.

One `Task` per kind of label a dataset carries (a class, a set of tags, a transcript); the
rest of the engine asks the task and never switches on its name:

    task = task_named(cfg.task)
    head = task.head(width, n_states, len(labels), layer)
    loss = task.loss(logits, frames, task.targets(batch, labels))
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .heads import CTCHead, PooledHead
from .metrics import accuracy, average_precision, cer, ctc_greedy, macro_auroc


class Task:
    name = ""
    metric = ""
    lower_is_better = False

    def labels(self, dataset) -> list[str]:
        """The head's output vocabulary, from the training set."""
        return dataset.vocab.labels

    def vocab(self, labels: list[str]):
        """The label vocabulary other datasets are read with (None: they carry text)."""
        from ..data.vocab import LabelVocab
        return LabelVocab(labels)

    def targets(self, raw: dict, labels: list[str]):
        """A collated data batch's targets, as `loss` and `score` take them."""
        raise NotImplementedError

    def head(self, width: int, n_states: int, n_out: int, layer="weighted") -> nn.Module:
        return PooledHead(width, n_states, n_out, layer)

    def loss(self, logits: torch.Tensor, frames: torch.Tensor, targets) -> torch.Tensor:
        raise NotImplementedError

    def score(self, outs: list, targets: list, frames: list, labels: list[str]) -> dict:
        """{"metric", "value", "n", ...} over a list of batches' logits, targets and frames."""
        raise NotImplementedError

    def match_loss(self, logits: torch.Tensor, teacher: torch.Tensor, frames: torch.Tensor,
                   temperature: float = 2.0) -> torch.Tensor:
        """How far the head's predictions are from a teacher's on the same batch: the KL
        divergence of the teacher's distribution to the student's, both softened by
        `temperature` and scaled by its square (Hinton, Vinyals, Dean 2015, "Distilling the
        knowledge in a neural network"), so that its gradient keeps its size whatever the
        temperature. 0 when the predictions match; the teacher is detached."""
        raise NotImplementedError

    def better(self, a: float, b: float) -> bool:
        """Is metric value `a` better than `b`?"""
        return a < b if self.lower_is_better else a > b

    def predictions(self, logits: torch.Tensor, frames: torch.Tensor, labels: list[str]) -> list[str]:
        """One line of text per clip: what `subnet predict` prints after the file name."""
        raise NotImplementedError


class Classify(Task):
    name, metric = "classify", "accuracy"

    def targets(self, raw, labels):
        return raw["label"]

    def loss(self, logits, frames, targets):
        return F.cross_entropy(logits, targets.to(logits.device))

    def score(self, outs, targets, frames, labels):
        y = torch.cat(targets)
        return {"metric": self.metric, "value": accuracy(torch.cat(outs), y), "n": len(y)}

    def match_loss(self, logits, teacher, frames, temperature=2.0):
        return temperature ** 2 * _kl(logits / temperature, teacher.detach() / temperature).mean()

    def predictions(self, logits, frames, labels):
        p = logits.softmax(-1)
        top = p.argmax(-1)
        return [f"{labels[int(i)]}\t{float(p[b, i]):.3f}" for b, i in enumerate(top)]


class Tag(Task):
    name, metric = "tag", "mAP"

    def targets(self, raw, labels):
        return raw["target"]

    def loss(self, logits, frames, targets):
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.device))

    def score(self, outs, targets, frames, labels):
        s, y = torch.cat(outs).sigmoid(), torch.cat(targets)
        return {"metric": self.metric, "value": average_precision(s, y), "auroc": macro_auroc(s, y), "n": len(y)}

    def match_loss(self, logits, teacher, frames, temperature=2.0):
        """Per tag, the KL divergence of the two Bernoulli distributions, averaged over tags and clips."""
        s, t = logits / temperature, teacher.detach() / temperature
        p = t.sigmoid()
        kl = (F.binary_cross_entropy_with_logits(s, p, reduction="none")
              - F.binary_cross_entropy_with_logits(t, p, reduction="none"))
        return temperature ** 2 * kl.mean()

    def predictions(self, logits, frames, labels):
        p = logits.sigmoid()
        return [" ".join(f"{labels[i]}:{float(row[i]):.2f}" for i in torch.nonzero(row > 0.5).flatten().tolist())
                or "-" for row in p]


class CTC(Task):
    """Character transcripts; the head's outputs are the training texts' characters + blank (0)."""

    name, metric, lower_is_better = "ctc", "cer", True

    def labels(self, dataset):
        return sorted({c for it in dataset.items for c in (it.text or "")})

    def vocab(self, labels):
        return None

    def targets(self, raw, labels):
        """(1-based character ids of all clips, their lengths, the texts)."""
        index = {c: i + 1 for i, c in enumerate(labels)}
        ids = [torch.tensor([index[c] for c in t if c in index], dtype=torch.long) for t in raw["text"]]
        lens = torch.tensor([len(i) for i in ids], dtype=torch.long)
        return (torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long), lens, raw["text"])

    def head(self, width, n_states, n_out, layer="weighted"):
        return CTCHead(width, n_states, n_out, layer)

    def loss(self, logits, frames, targets):
        ids, lens = targets[0].to(logits.device), targets[1].to(logits.device)
        logp = logits.log_softmax(-1).transpose(0, 1)  # (F, B, V+1)
        return F.ctc_loss(logp, ids, frames.sum(1), lens, blank=0, zero_infinity=True)

    def score(self, outs, targets, frames, labels):
        hyps, refs = [], []
        for logits, fr, (_, _, texts) in zip(outs, frames, targets):
            hyps += self.predictions(logits, fr, labels)
            refs.extend(texts)
        return {"metric": self.metric, "value": cer(hyps, refs), "n": len(refs), "examples": list(zip(hyps, refs))[:5]}

    def match_loss(self, logits, teacher, frames, temperature=2.0):
        """Per real frame, the KL divergence over characters + blank, averaged over real frames."""
        kl = _kl(logits / temperature, teacher.detach() / temperature)  # (B, F)
        frames = frames.to(kl.device, torch.bool)
        return temperature ** 2 * torch.where(frames, kl, 0.0).sum() / frames.sum().clamp(min=1)

    def predictions(self, logits, frames, labels):
        return ["".join(labels[i - 1] for i in seq) for seq in ctc_greedy(logits, frames)]


def _kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(softmax(teacher) || softmax(student)) over the last axis, one value per row."""
    t = teacher.float().log_softmax(-1)
    return (t.exp() * (t - student.float().log_softmax(-1))).sum(-1)


TASKS = {t.name: t for t in (Classify(), Tag(), CTC())}


def task_named(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def task_of_metric(metric: str) -> Task:
    """The task a metrics.json's metric name belongs to."""
    return next(t for t in TASKS.values() if t.metric == metric)
