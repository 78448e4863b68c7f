"""Dataset recipes: deterministic for a seed, loadable, with source and licence per clip, and
a clear apt-get command (or a skipped test) when a Debian package is missing."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from subnet.data import load_dataset
from subnet.cli import main
from subnet.data.recipes import RECIPES, ToolMissing, build_recipe
from subnet.data.recipes import digits_real, gm
from subnet.data.recipes.midi import Note, _vlq, midi_bytes
from subnet.data.recipes.splits import split_groups
from subnet.data.recipes.writer import DatasetWriter, tidy

ROOT = Path(__file__).resolve().parents[1]


def build(name, out, seed=0, size="tiny"):
    """build_recipe, or skip the test naming the missing package and the command."""
    try:
        return build_recipe(name, out, seed=seed, size=size, progress=False)
    except ToolMissing as e:
        pytest.skip(f"recipe {name}: {e}")


def digest(manifest: Path) -> dict:
    """manifest text + sha256 of every file it lists."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return {"manifest": manifest.read_text(),
            **{r["path"]: hashlib.sha256((manifest.parent / r["path"]).read_bytes()).hexdigest() for r in rows}}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kws-tts", "instruments"])
def test_same_seed_same_bytes(tmp_path, name):
    a, b = build(name, tmp_path / "a", seed=3), build(name, tmp_path / "b", seed=3)
    assert digest(a) == digest(b)
    c = build(name, tmp_path / "c", seed=4)
    assert digest(c)["manifest"] != digest(a)["manifest"]


def check_rows(manifest: Path, kind: str):
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert rows and all(r["source"] and r["licence"] and r["split"] in ("train", "valid", "test") for r in rows)
    assert all(kind in r for r in rows)
    info = json.loads((manifest.parent / "recipe.json").read_text())
    assert info["clips"] == len(rows)
    return rows


def test_kws_tts_loads_with_every_split_and_engine(tmp_path):
    m = build("kws-tts", tmp_path / "kws")
    rows = check_rows(m, "label")
    assert {r["split"] for r in rows} == {"train", "valid", "test"}
    assert {r["engine"] for r in rows} >= {"espeak-ng"} and len({r["label"] for r in rows}) == 20
    train = load_dataset(m, split="train", progress=False)
    assert len(train.vocab) == 20 and train[0]["wave"].abs().max() > 0.5
    # splits are by voice: no voice is in two splits
    by_voice = {}
    for r in rows:
        by_voice.setdefault(r["voice"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_voice.values())


def test_digits_real_english_labels(tmp_path):
    m = build("digits-real", tmp_path / "d", size="small")
    rows = check_rows(m, "label")
    assert {r["label"] for r in rows} == set(digits_real.DIGITS)
    assert all("CC-BY-SA" in r["licence"] for r in rows)
    ds = load_dataset(m, progress=False)
    assert ds.checked.rates[0] == 8000 and ds[0]["wave"].ndim == 1  # read at 8 kHz, served at 16 kHz


def test_pitch_tagging_asr(tmp_path):
    rows = check_rows(build("pitch", tmp_path / "p"), "label")
    assert all(r["label"] == f"{r['pitch']:03d}-" + r["label"].split("-")[1] for r in rows)
    m = build("tagging", tmp_path / "t")
    rows = check_rows(m, "labels")
    assert all(1 <= len(r["labels"]) <= 3 for r in rows)
    assert load_dataset(m, split="train", progress=False)[0]["target"].sum() >= 1
    rows = check_rows(build("asr-tts", tmp_path / "a"), "text")
    assert all(r["text"] == r["text"].lower() and r["text"].strip() for r in rows)


def test_missing_speech_engine_names_the_apt_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng, flite, festival on PATH
    with pytest.raises(ToolMissing, match=r"apt-get install -y espeak-ng flite festival festvox-kallpc16k"):
        build_recipe("kws-tts", tmp_path / "out", size="tiny", progress=False)


def test_missing_soundfont_names_the_apt_command(tmp_path, monkeypatch):
    monkeypatch.setitem(gm.SOUNDFONTS, "test", (str(tmp_path / "TimGM6mb.sf2"), "timgm6mb-soundfont", "GPL"))
    if not Path(gm.SOUNDFONTS["train"][0]).exists():
        pytest.skip("fluid-soundfont-gm is not installed")
    for name in ("instruments", "instruments-unlabeled", "pitch", "tagging"):
        with pytest.raises(ToolMissing, match=r"(?s)TimGM6mb.sf2 is not installed.*apt-get install -y timgm6mb-soundfont"):
            build_recipe(name, tmp_path / "out", size="tiny", progress=False)
        assert not (tmp_path / "out").exists()  # checked before any work; nothing left behind


def test_missing_prompts_name_the_apt_command(tmp_path):
    with pytest.raises(ToolMissing, match=r"apt-get install -y asterisk-core-sounds-en-wav"):
        digits_real.build(DatasetWriter(tmp_path / "o", "digits-real", 0, "tiny"), 0, "tiny", False, root=tmp_path)
    with pytest.raises(ToolMissing, match=r"asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav"):
        digits_real.build(DatasetWriter(tmp_path / "p", "digits-real", 0, "full"), 0, "full", False, root=tmp_path)


def test_cli_build_check_list(tmp_path, capsys):
    out = tmp_path / "digits"
    if digits_real.digit_files("en") is None:
        pytest.skip("asterisk-core-sounds-en-wav is not installed")
    assert main(["data", "build", "digits-real", "--out", str(out), "--size", "tiny", "--quiet"]) == 0
    assert "digits-real: 10 clips (test 10)" in capsys.readouterr().out
    assert json.loads((out / "recipe.json").read_text())["status"] == "done"
    assert main(["data", "build", "digits-real", "--out", str(out), "--size", "tiny", "--quiet"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["data", "build", "digits-real", "--out", str(out), "--size", "tiny", "--quiet", "--force"]) == 0
    assert main(["data", "check", str(out / "manifest.jsonl"), "--quiet", "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["clips"] == 10
    (out / "test" / "zero" / "en_0.wav").write_bytes(b"")
    assert main(["data", "check", str(out / "manifest.jsonl"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{out / 'manifest.jsonl'}:10: {out / 'test/zero/en_0.wav'}: the file is empty" in err
    assert main(["data", "list"]) == 0 and "kws-tts" in capsys.readouterr().out


def test_cli_build_reports_missing_tool(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["data", "build", "asr-tts", "--out", str(tmp_path / "o"), "--size", "tiny", "--quiet"]) == 2
    assert "apt-get install -y espeak-ng" in capsys.readouterr().err


def test_install_script_covers_every_recipe():
    listed = set(subprocess.run(["bash", str(ROOT / ".ci/install-audio.sh"), "--list"], capture_output=True,
                                text=True, check=True).stdout.split())
    for r in RECIPES.values():
        assert set(r.packages) <= listed, r.name


def test_midi_writer():
    assert [_vlq(n) for n in (0, 0x7F, 0x80, 0x3FFF, 0x4000)] == [b"\x00", b"\x7f", b"\x81\x00", b"\xff\x7f",
                                                                  b"\x81\x80\x00"]
    data = midi_bytes([Note(0.0, 0.5, 40, 60, 100, silence_at=1.0)])
    assert data[:4] == b"MThd" and data[8:14] == b"\x00\x00\x00\x01\x01\xe0" and data[14:18] == b"MTrk"
    track = data[22:]
    assert b"\x00\xc0\x28\x00\x90\x3c\x64" in track  # program 40, then note on C4 at tick 0
    assert b"\x83\x60\x80\x3c\x00" in track          # note off after 480 ticks (0.5 s)
    assert b"\x83\x60\xb0\x78\x00" in track          # all sound off 480 ticks later
    assert track.endswith(b"\x00\xff\x2f\x00")
    with pytest.raises(ValueError, match="drums"):
        midi_bytes([Note(0, 1, 0, 60, channel=9)])


def test_split_groups():
    s = split_groups(range(10), seed=1)
    assert s == split_groups(range(10), seed=1) and sorted(s.values()).count("train") == 8
    assert set(split_groups(range(3), seed=0).values()) == {"train", "valid", "test"}
    assert set(split_groups(range(2), seed=0).values()) == {"train"}


def test_tidy_and_writer_safety(tmp_path):
    x = np.zeros(22050, np.float32)
    x[10000:12000] = 0.3
    y = tidy(x, 22050, 16000)
    assert abs(len(y) - round((2000 / 22050 + 0.1) * 16000)) < 40 and abs(np.abs(y).max() - 0.9) < 0.05
    assert tidy(np.zeros(100, np.float32), 16000) is None
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not a recipe output"):
        DatasetWriter(tmp_path / "mine", "kws-tts", 0, "tiny", overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").exists()


def test_prompts_real_are_the_prompts_without_the_digits(tmp_path):
    from subnet.data.recipes import prompts_real
    m = build("prompts-real", tmp_path / "p", size="tiny")
    rows = check_rows(m, "label")
    assert len(rows) == prompts_real.TINY and {r["split"] for r in rows} == {"train"}
    assert not any("digits" in Path(r["path"]).parts for r in rows)  # the keyword test clips stay unseen
    assert len({r["label"] for r in rows}) == len(rows)  # a label names its prompt
    full = prompts_real.prompt_files()
    assert len(full) > 400 and not any(f.parent.name in ("digits", "silence") for f in full)
    ds = load_dataset(m, progress=False)
    assert ds.checked.rates[0] == 8000
    with pytest.raises(ToolMissing, match="asterisk-core-sounds-en-wav"):
        prompts_real.build(DatasetWriter(tmp_path / "o", "prompts-real", 0, "tiny"), 0, "tiny", False, root=tmp_path)


def test_instruments_unlabeled_are_notes_no_instruments_split_has(tmp_path):
    from subnet.data.recipes import instruments, instruments_unlabeled
    for size, splits in instruments.PITCHES.items():  # at every size, pitches no split of instruments renders
        used = {p for pitches, _ in splits.values() for p in pitches}
        assert not set(instruments_unlabeled.UNUSED_PITCHES[size][0]) & used
    # the full size's notes are no valid or test note of the small size either (experiment 2 mixes them)
    small = instruments.PITCHES["small"]
    assert not set(instruments_unlabeled.UNUSED_PITCHES["full"][0]) & {*small["valid"][0], *small["test"][0]}
    m = build("instruments-unlabeled", tmp_path / "u")
    rows = [json.loads(line) for line in m.read_text().splitlines()]
    assert {r["split"] for r in rows} == set(instruments_unlabeled.SPLITS)
    assert {r["split"]: r["soundfont"] for r in rows} == {"fluidr3": "FluidR3_GM.sf2", "timgm6mb": "TimGM6mb.sf2"}
    labelled = [json.loads(line) for line in build("instruments", tmp_path / "i").read_text().splitlines()]
    notes = {(r["soundfont"], r["program"], r["pitch"]) for r in labelled}
    assert rows and not notes & {(r["soundfont"], r["program"], r["pitch"]) for r in rows}
    # the same programs, each moved to its register as instruments does (basses two octaves down)
    assert {r["program"] for r in rows} == {r["program"] for r in labelled}
    assert all(r["pitch"] == 62 + gm.register_shift(r["program"]) and r["label"] == gm.family(r["program"])
               for r in rows)
