"""20 gate-training steps of a masked whisper-tiny-shaped encoder; saves every gate gradient.

Run as a script (one process per kernel backend: the backend and TRITON_INTERPRET must be
set before anything imports triton): python engine_steps.py OUT.pt"""
import sys

import torch
import transformers
from transformers.models.whisper.modeling_whisper import WhisperEncoder

import subnet


def run(steps: int = 20):
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(d_model=384, encoder_layers=2, encoder_attention_heads=6, encoder_ffn_dim=1536,
                                     num_mel_bins=80, max_source_positions=16, dropout=0.0)
    enc = WhisperEncoder(cfg).eval()
    mm = subnet.attach_masks(enc)
    opt = torch.optim.Adam(mm.parameters(), lr=0.2)
    sparsity = subnet.SparsityLoss("seed", t=0.5, lam=0.5)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 80, 32, generator=g)
    w = torch.randn(2, 16, 384, generator=g)
    history = []
    for _ in range(steps):
        opt.zero_grad()
        loss = (mm(input_features=x).last_hidden_state * w).mean() + sparsity(mm)
        loss.backward()
        history.append([p.grad.clone() for p in mm.logits])
        opt.step()
    return history


if __name__ == "__main__":
    torch.save(run(), sys.argv[1])
