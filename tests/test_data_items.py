"""Reading datasets: folder trees, JSONL and CSV manifests, splits, the label vocabulary."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from subnet.data import AudioDataset, LabelVocab, load_dataset, read_items


def tone(path, seconds=0.5, rate=16000, freq=440.0, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, rate)
    return path


@pytest.fixture
def folder(tmp_path):
    for cls, f in [("dog", 300), ("cat", 500), ("bird", 700)]:
        (tmp_path / "ds" / cls).mkdir(parents=True)
        for i in range(2):
            tone(tmp_path / "ds" / cls / f"{i}.wav", freq=f + i)
    (tmp_path / "ds" / "README.txt").write_text("ignored: not inside a class folder")
    return tmp_path / "ds"


def test_folder_tree(folder):
    ds = load_dataset(folder, progress=False)
    assert len(ds) == 6 and ds.kind == "label"
    assert ds.vocab.labels == ["bird", "cat", "dog"]
    ex = ds[0]
    assert ex["wave"].shape == (8000,) and ex["label"] == ds.vocab.index(ds.items[0].label)


def test_folder_tree_with_split_folders(tmp_path):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            tone(tmp_path / split / cls / "x.wav")
    items, problems = read_items(tmp_path)
    assert not problems and {it.split for it in items} == {"train", "test"}
    assert len(load_dataset(tmp_path, split="test", progress=False)) == 2


def test_jsonl_manifest_relative_paths_and_splits(tmp_path):
    (tmp_path / "clips").mkdir()
    rows = []
    for i, (lab, split) in enumerate([("yes", "train"), ("no", "train"), ("yes", "test")]):
        tone(tmp_path / "clips" / f"{i}.wav", freq=300 + 100 * i)
        rows.append({"path": f"clips/{i}.wav", "label": lab, "split": split, "source": "tone", "licence": "CC0"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train = load_dataset(tmp_path / "m.jsonl", split="train", progress=False)
    assert len(train) == 2 and train.vocab.labels == ["no", "yes"]
    assert dict(train.items[0].extra)["licence"] == "CC0"
    test = load_dataset(tmp_path / "m.jsonl", split="test", vocab=train.vocab, progress=False)
    assert test[0]["label"] == train.vocab.index("yes")
    only_test = load_dataset(tmp_path / "m.jsonl", keep=lambda it: it.split == "test", progress=False)
    assert len(only_test) == 1 and only_test.items[0].field("source") == "tone"
    with pytest.raises(ValueError, match="no clips of split 'valid'.*test, train"):
        load_dataset(tmp_path / "m.jsonl", split="valid", progress=False)


def test_csv_manifest_multilabel_and_text(tmp_path):
    tone(tmp_path / "a.wav"), tone(tmp_path / "b.wav")
    (tmp_path / "tags.csv").write_text('path,labels\na.wav,"[""piano"", ""bass""]"\nb.wav,strings;piano\n')
    ds = load_dataset(tmp_path / "tags.csv", progress=False)
    assert ds.kind == "labels" and ds.vocab.labels == ["bass", "piano", "strings"]
    assert ds[0]["target"].tolist() == [1, 1, 0] and ds[1]["target"].tolist() == [0, 1, 1]
    (tmp_path / "asr.csv").write_text("path,text,split\na.wav,hello world,train\n")
    ds = load_dataset(tmp_path / "asr.csv", progress=False)
    assert ds.kind == "text" and ds.vocab is None and ds[0]["text"] == "hello world"


def test_tsv_manifest(tmp_path):
    tone(tmp_path / "a.wav")
    (tmp_path / "m.tsv").write_text("path\tlabel\na.wav\tx\n")
    assert load_dataset(tmp_path / "m.tsv", progress=False).vocab.labels == ["x"]


def test_vocab_sorted_roundtrip(tmp_path):
    v = LabelVocab(["yes", "no", "yes", "down"])
    assert v.labels == ["down", "no", "yes"] and v.index("no") == 1 and "up" not in v
    v.save(tmp_path / "labels.json")
    assert LabelVocab.load(tmp_path / "labels.json") == v
    assert v.multi_hot(["yes", "down"]).tolist() == [1, 0, 1]
    with pytest.raises(KeyError, match="unknown label 'up'.*down, no, yes"):
        v.index("up")


def test_unknown_format(tmp_path):
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown dataset format"):
        read_items(tmp_path / "m.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_items(tmp_path / "nope.jsonl")


def test_dataset_is_a_torch_dataset(folder):
    assert isinstance(load_dataset(folder, progress=False), AudioDataset)
