"""Metrics against hand-computed values."""
import pytest
import torch

from subnet.training import metrics


def test_accuracy():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert metrics.accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


def test_average_precision_and_auroc():
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.3, 0.2], [0.1, 0.9]])
    targets = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 1]])
    # class 0: ranks 1 (hit), 2 (miss), 3 (hit): AP = (1 + 2/3) / 2; class 1: ranks 1, 2 hits: AP 1
    assert metrics.average_precision(scores, targets) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    # class 0: pos {0.9, 0.3} vs neg {0.8, 0.1}: 3 of 4 pairs; class 1: 4 of 4
    assert metrics.macro_auroc(scores, targets) == pytest.approx((3 / 4 + 1) / 2)


def test_error_rates():
    assert metrics.edit_distance("kitten", "sitting") == 3
    assert metrics.cer(["abc"], ["abd"]) == pytest.approx(1 / 3)
    assert metrics.wer(["one two three"], ["one too three four"]) == pytest.approx(2 / 4)


def test_ctc_greedy():
    # frames: a a blank a b b (pad)
    ids = torch.tensor([[1, 1, 0, 1, 2, 2, 3]])
    logits = torch.nn.functional.one_hot(ids, 4).float()
    assert metrics.ctc_greedy(logits, torch.tensor([[True] * 6 + [False]])) == [[1, 1, 2]]
