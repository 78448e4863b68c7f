"""A minimal Standard MIDI File writer and a fluidsynth renderer.

Only what the instrument recipes need: one track, notes with a program per note, rendered
offline by ``fluidsynth`` without reverb or chorus (so each note's audio is its own).
"""
from __future__ import annotations

import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .tools import require_binary, require_file

TICKS_PER_SECOND = 960  # 480 ticks per quarter at the default 120 bpm
DRUM_CHANNEL = 9        # General MIDI channel 10: percussion kits, never a melodic program


@dataclass(frozen=True)
class Note:
    """One note: start and length in seconds, GM ``program`` 0..127, MIDI ``pitch`` 0..127."""

    start: float
    length: float
    program: int
    pitch: int
    velocity: int = 100
    channel: int = 0
    silence_at: float | None = None  # send "all sound off" on the channel then (cuts the release)


def _vlq(n: int) -> bytes:
    """MIDI variable-length quantity: 7 bits per byte, high bit set on all but the last."""
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def midi_bytes(notes: list[Note]) -> bytes:
    """A format-0 MIDI file playing ``notes`` (a program change precedes each note on)."""
    events = []  # (tick, order, bytes): at equal ticks, note offs (0) before program changes (1) and ons (2)
    for n in notes:
        if n.channel == DRUM_CHANNEL or not 0 <= n.channel < 16:
            raise ValueError(f"channel {n.channel}: use 0..15 except {DRUM_CHANNEL} (drums)")
        on, off = round(n.start * TICKS_PER_SECOND), round((n.start + n.length) * TICKS_PER_SECOND)
        events.append((on, 1, bytes([0xC0 | n.channel, n.program])))
        events.append((on, 2, bytes([0x90 | n.channel, n.pitch, n.velocity])))
        events.append((off, 0, bytes([0x80 | n.channel, n.pitch, 0])))
        if n.silence_at is not None:  # controller 120: all sound off, so no tail leaks onward
            events.append((round(n.silence_at * TICKS_PER_SECOND), 0, bytes([0xB0 | n.channel, 120, 0])))
    events.sort(key=lambda e: (e[0], e[1]))
    track, now = bytearray(b"\x00\xff\x51\x03\x07\xa1\x20"), 0  # tempo 500000 us per quarter
    for tick, _, data in events:
        track += _vlq(tick - now) + data
        now = tick
    track += b"\x00\xff\x2f\x00"  # end of track
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def render(notes: list[Note], soundfont: Path, sample_rate: int = 16000, gain: float = 0.5) -> np.ndarray:
    """Render ``notes`` with ``soundfont`` -> float32 mono samples at ``sample_rate``."""
    import soundfile as sf

    exe = require_binary("fluidsynth", "fluidsynth")
    require_file(soundfont)
    with tempfile.TemporaryDirectory(prefix="subnet-midi-") as tmp:
        mid, wav = Path(tmp) / "notes.mid", Path(tmp) / "out.wav"
        mid.write_bytes(midi_bytes(notes))
        cmd = [exe, "-ni", "-q", "-R", "0", "-C", "0", "-g", str(gain), "-r", str(sample_rate), "-T", "wav",
               "-O", "s16", "-F", str(wav), str(soundfont), str(mid)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode or not wav.is_file():
            raise RuntimeError(f"fluidsynth failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr.strip()}")
        x, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise RuntimeError(f"fluidsynth wrote {rate} Hz instead of {sample_rate} Hz")
    return x.mean(axis=1)
