"""Task heads on top of the (masked or compact) encoder's hidden states.

Every head reads `hidden_states`, the tuple of (B, F, D) outputs the encoder returns with
`output_hidden_states=True`, and a (B, F) bool `frames` mask of real (non-padding) frames.
`layer` picks one of them (an index) or "weighted": a learned softmax-weighted sum.
"""
from __future__ import annotations

import torch
from torch import nn

class LayerMix(nn.Module):
    def __init__(self, n_states: int, layer):
        super().__init__()
        self.layer = layer
        if layer == "weighted":
            self.weights = nn.Parameter(torch.zeros(n_states))
        elif not -n_states <= int(layer) < n_states:
            raise ValueError(f"layer {layer} out of range for {n_states} hidden states")

    def forward(self, hidden_states):
        if self.layer != "weighted":
            return hidden_states[int(self.layer)]
        w = torch.softmax(self.weights, 0)
        return sum(wi * h for wi, h in zip(w, hidden_states))


class PooledHead(nn.Module):
    """Masked mean over time, LayerNorm, then an MLP with one 1024-unit hidden layer."""

    def __init__(self, width: int, n_states: int, n_out: int, layer="weighted", hidden: int = 1024,
                 dropout: float = 0.1):
        super().__init__()
        self.mix = LayerMix(n_states, layer)
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, n_out))

    def forward(self, hidden_states, frames):
        h = self.mix(hidden_states)
        w = frames.to(h.dtype).unsqueeze(-1)
        pooled = (h * w).sum(1) / w.sum(1).clamp(min=1)
        return self.mlp(self.norm(pooled))


class CTCHead(nn.Module):
    """A bidirectional LSTM (256 per direction) over frames, then per-frame logits over
    the vocabulary + blank (index 0)."""

    def __init__(self, width: int, n_states: int, vocab: int, layer="weighted", hidden: int = 256):
        super().__init__()
        self.mix = LayerMix(n_states, layer)
        self.norm = nn.LayerNorm(width)
        self.lstm = nn.LSTM(width, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, vocab + 1)

    def forward(self, hidden_states, frames):
        h = self.norm(self.mix(hidden_states))
        lengths = frames.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=h.shape[1])
        return self.out(out)  # (B, F, vocab + 1)
