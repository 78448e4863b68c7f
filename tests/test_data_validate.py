"""Bad input: every case is an error naming the file (and manifest line) and the fix, or with
skip_bad is skipped and counted; nothing fails mid-training and nothing vanishes silently."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from subnet.data import BadInputError, LabelVocab, collate, load_dataset


def good(path):
    sf.write(path, np.full(1600, 0.1, np.float32), 16000)
    return path


def manifest(tmp_path, rows, name="m.jsonl"):
    (tmp_path / name).write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return tmp_path / name


def bad_case(tmp_path, kind):
    """A manifest whose line 2 is bad in the way ``kind`` says; returns (manifest, bad file name)."""
    good(tmp_path / "ok.wav")
    bad = {"missing": "gone.wav", "empty": "empty.wav", "corrupt": "corrupt.wav", "not_audio": "notes.txt",
           "nan": "nan.wav", "unknown_label": "ok2.wav"}[kind]
    if kind == "empty":
        (tmp_path / bad).write_bytes(b"")
    elif kind == "corrupt":
        (tmp_path / bad).write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" * 4)
    elif kind == "not_audio":
        (tmp_path / bad).write_text("just some notes, not audio\n" * 20)
    elif kind == "nan":
        x = np.full(1600, 0.1, np.float32)
        x[800] = np.nan
        sf.write(tmp_path / bad, x, 16000, subtype="FLOAT")
    elif kind == "unknown_label":
        good(tmp_path / bad)
    label = "maybe" if kind == "unknown_label" else "yes"
    return manifest(tmp_path, [{"path": "ok.wav", "label": "yes"}, {"path": bad, "label": label}]), bad


KINDS = ["missing", "empty", "corrupt", "not_audio", "nan", "unknown_label"]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_file_error_names_file_line_and_fix(tmp_path, kind):
    m, bad = bad_case(tmp_path, kind)
    vocab = LabelVocab(["yes", "no"])
    with pytest.raises(BadInputError) as e:
        load_dataset(m, vocab=vocab, progress=False)
    msg = str(e.value)
    assert f"{m}:2" in msg and bad in msg and "fix:" in msg and "skip_bad" in msg
    assert [p.reason for p in e.value.problems] == [kind]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_file_skipped_and_counted(tmp_path, kind):
    m, bad = bad_case(tmp_path, kind)
    ds = load_dataset(m, vocab=LabelVocab(["yes", "no"]), skip_bad=True, progress=False)
    assert len(ds) == 1
    summary = ds.summary.as_dict()
    assert summary[kind]["count"] == 1 and bad in summary[kind]["examples"][0]
    assert f"1 {kind}" in str(ds.summary)


def test_csv_line_numbers(tmp_path):
    good(tmp_path / "ok.wav")
    (tmp_path / "m.csv").write_text("path,label\nok.wav,a\nmissing.wav,b\n")
    with pytest.raises(BadInputError, match=r"m\.csv:3: .*missing\.wav: file not found"):
        load_dataset(tmp_path / "m.csv", progress=False)


@pytest.mark.parametrize("line, why", [
    ("{not json", "not valid JSON"),
    ('{"label": "yes"}', "no 'path' field"),
    ('{"path": "ok.wav"}', "exactly one of label | labels | text, has none"),
    ('{"path": "ok.wav", "label": "a", "text": "a"}', "has label and text"),
    ('{"path": "ok.wav", "text": "hello"}', "has 'text' but the manifest's first entry has 'label'"),
    ('["ok.wav", "yes"]', "not a JSON object"),
])
def test_bad_manifest_lines(tmp_path, line, why):
    good(tmp_path / "ok.wav")
    m = manifest(tmp_path, [{"path": "ok.wav", "label": "yes"}, "", line])
    with pytest.raises(BadInputError) as e:
        load_dataset(m, progress=False)
    assert f"{m}:3" in str(e.value) and why in str(e.value)
    ds = load_dataset(m, skip_bad=True, progress=False)
    assert len(ds) == 1 and ds.summary.counts["bad_entry"] == 1


def test_empty_class_folder(tmp_path):
    (tmp_path / "yes").mkdir(), (tmp_path / "no").mkdir()
    good(tmp_path / "yes" / "a.wav")
    with pytest.raises(BadInputError, match=r"no: class folder 'no' holds no audio files.*add audio files"):
        load_dataset(tmp_path, progress=False)
    ds = load_dataset(tmp_path, skip_bad=True, progress=False)
    assert ds.vocab.labels == ["yes"] and ds.summary.counts["empty_class"] == 1


def test_non_audio_file_in_class_folder(tmp_path):
    (tmp_path / "yes").mkdir()
    good(tmp_path / "yes" / "a.wav")
    (tmp_path / "yes" / "notes.md").write_text("hi")
    (tmp_path / "yes" / ".DS_Store").write_text("hidden files are ignored")
    with pytest.raises(BadInputError, match=r"yes/notes\.md: not an audio file"):
        load_dataset(tmp_path, progress=False)


def test_class_left_empty_after_skipping(tmp_path):
    (tmp_path / "yes").mkdir(), (tmp_path / "no").mkdir()
    good(tmp_path / "yes" / "a.wav")
    (tmp_path / "no" / "b.wav").write_bytes(b"")
    with pytest.raises(BadInputError) as e:
        load_dataset(tmp_path, progress=False)
    assert "no/b.wav: the file is empty" in str(e.value)
    ds = load_dataset(tmp_path, skip_bad=True, progress=False)
    assert ds.vocab.labels == ["yes"]
    assert ds.summary.as_dict()["empty_class"]["examples"] == ["no: class 'no' has no usable file left (fix: fix its files or add good ones)"]


def test_nan_found_at_decode_time(tmp_path):
    """A file that changes after validation: an error naming it, or skipped and reported by collate."""
    m = manifest(tmp_path, [{"path": "a.wav", "label": "x"}, {"path": "b.wav", "label": "x"}])
    good(tmp_path / "a.wav"), good(tmp_path / "b.wav")
    strict = load_dataset(m, progress=False)
    lenient = load_dataset(m, skip_bad=True, progress=False)
    x = np.full(1600, 0.1, np.float32)
    x[3] = np.inf
    sf.write(tmp_path / "b.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(BadInputError, match=rf"{m}:2: .*b\.wav: NaN/inf sample at 0\.000 s"):
        strict[1]
    batch = collate([lenient[0], lenient[1]])
    assert batch["waves"].shape[0] == 1 and len(batch["skipped"]) == 1
    assert batch["skipped"][0].reason == "nan" and "b.wav" in str(batch["skipped"][0])
    assert torch.isfinite(batch["waves"]).all()


def test_all_problems_listed_at_once(tmp_path):
    good(tmp_path / "ok.wav")
    m = manifest(tmp_path, [{"path": f"missing{i}.wav", "label": "x"} for i in range(12)] + [{"path": "ok.wav", "label": "x"}])
    with pytest.raises(BadInputError) as e:
        load_dataset(m, progress=False)
    assert len(e.value.problems) == 12 and "12 bad inputs" in str(e.value) and "... and 2 more" in str(e.value)
    ds = load_dataset(m, skip_bad=True, progress=False)
    assert ds.summary.total == 12 and len(ds.summary.as_dict()["missing"]["examples"]) == 5


def test_nothing_left(tmp_path):
    m = manifest(tmp_path, [{"path": "missing.wav", "label": "x"}])
    with pytest.raises(ValueError, match="no usable clips left"):
        load_dataset(m, skip_bad=True, progress=False)


def test_a_clip_shorter_than_the_encoder_needs_is_named(tmp_path):
    good(tmp_path / "ok.wav")
    sf.write(tmp_path / "blip.wav", np.full(100, 0.1, np.float32), 16000)  # 6.25 ms
    m = manifest(tmp_path, [{"path": "ok.wav", "label": "a"}, {"path": "blip.wav", "label": "a"}])
    with pytest.raises(BadInputError) as e:
        load_dataset(m, min_seconds=0.025, progress=False)
    assert "m.jsonl:2" in str(e.value) and "blip.wav" in str(e.value) and "needs at least 25.0 ms" in str(e.value)
    ds = load_dataset(m, min_seconds=0.025, skip_bad=True, progress=False)
    assert len(ds) == 1 and ds.summary.counts == {"too_short": 1}
    assert len(load_dataset(m, progress=False)) == 2  # no minimum: both are fine


def test_resampling_and_mixing_down_are_reported(tmp_path, caplog):
    good(tmp_path / "ok.wav")
    sf.write(tmp_path / "phone.wav", np.full(800, 0.1, np.float32), 8000)
    sf.write(tmp_path / "stereo.wav", np.full((1600, 2), 0.1, np.float32), 16000)
    m = manifest(tmp_path, [{"path": p, "label": "a"} for p in ("ok.wav", "phone.wav", "stereo.wav")])
    with caplog.at_level("INFO", logger="subnet"):
        ds = load_dataset(m, sample_rate=16000, progress=False)
    assert ds.notes == ["1 file at 8000 Hz resampled to 16000 Hz", "1 multi-channel file mixed down to mono"]
    assert all(n in caplog.text for n in ds.notes)
    assert ds[1]["wave"].shape == (1600,) and ds[2]["wave"].shape == (1600,)
    assert load_dataset(m, sample_rate=8000, progress=False).notes[0] == "2 files at 16000 Hz resampled to 8000 Hz"
