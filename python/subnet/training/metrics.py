"""Task metrics: accuracy, mAP and macro AUROC (multi-label), CER and WER (CTC)."""
from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean()) if labels.numel() else float("nan")


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over classes with at least one positive of the area under precision-recall."""
    aps = []
    for c in range(scores.shape[1]):
        t = targets[:, c].bool()
        if not t.any():
            continue
        order = torch.argsort(scores[:, c], descending=True)
        hits = t[order].float()
        precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
        aps.append(float((precision * hits).sum() / hits.sum()))
    return sum(aps) / len(aps) if aps else float("nan")


def macro_auroc(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over classes with positives and negatives of P(score_pos > score_neg) (ties 1/2)."""
    aucs = []
    for c in range(scores.shape[1]):
        t = targets[:, c].bool()
        pos, neg = scores[t, c], scores[~t, c]
        if len(pos) == 0 or len(neg) == 0:
            continue
        diff = pos[:, None] - neg[None, :]
        aucs.append(float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean()))
    return sum(aucs) / len(aucs) if aucs else float("nan")


def edit_distance(a, b) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def error_rate(hyps: list, refs: list) -> float:
    """Total edits / total reference length (sequences of characters or of words)."""
    edits = sum(edit_distance(h, r) for h, r in zip(hyps, refs))
    total = sum(len(r) for r in refs)
    return edits / max(total, 1)


def cer(hyps: list[str], refs: list[str]) -> float:
    return error_rate(hyps, refs)


def wer(hyps: list[str], refs: list[str]) -> float:
    return error_rate([h.split() for h in hyps], [r.split() for r in refs])


def ctc_greedy(logits: torch.Tensor, frames: torch.Tensor) -> list[list[int]]:
    """Best path, repeats merged, blanks (0) dropped; ids are 1-based vocabulary indices."""
    out = []
    for row, n in zip(logits.argmax(-1), frames.sum(1)):
        seq, last = [], 0
        for t in row[: int(n)].tolist():
            if t != last and t != 0:
                seq.append(t)
            last = t
        out.append(seq)
    return out
