"""Where the clips are: a folder-per-class tree or a JSONL/CSV manifest -> a list of Items.

Manifest fields: ``path`` (relative to the manifest's folder, or absolute) and one of
``label`` (one class), ``labels`` (a list: multi-label; in CSV a JSON list or "a;b") or
``text`` (a transcript), plus an optional ``split``. A folder tree is ``ROOT/CLASS/file``,
or ``ROOT/SPLIT/CLASS/file`` when every top-level folder is a split name.
Structural problems (unparsable line, no path, no target) are returned, not raised, so the
caller decides between an error and skip-and-count.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import Problem

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
                    ".au", ".snd", ".caf", ".w64", ".rf64", ".sph", ".nist", ".voc"}
SPLIT_NAMES = {"train", "valid", "validation", "val", "dev", "test", "eval"}
TARGET_KINDS = ("label", "labels", "text")


@dataclass(frozen=True)
class Item:
    """One clip. ``line`` is "manifest.jsonl:N" for manifest entries (None in a folder tree)."""

    path: Path
    label: str | None = None
    labels: tuple[str, ...] | None = None
    text: str | None = None
    split: str | None = None
    line: str | None = None
    extra: tuple = ()  # other manifest fields as (key, value) pairs, e.g. source/licence

    @property
    def kind(self) -> str:
        """"label", "labels" or "text": which target this item carries."""
        return "label" if self.label is not None else "labels" if self.labels is not None else "text"

    def targets(self) -> tuple[str, ...]:
        """The class names of this item (none for a transcript)."""
        return (self.label,) if self.label is not None else tuple(self.labels or ())

    def field(self, name: str, default=None):
        """Another manifest field of this clip (e.g. "language", "source"), or ``default``."""
        return dict(self.extra).get(name, default)

    def problem(self, reason: str, detail: str, fix: str | None = None) -> Problem:
        return Problem(reason, str(self.path), detail, self.line, fix)


def read_items(source) -> tuple[list[Item], list[Problem]]:
    """Items and structural problems of a folder tree or a ``.jsonl``/``.csv`` manifest."""
    source = Path(source)
    if source.is_dir():
        return read_folder(source)
    if not source.exists():
        raise FileNotFoundError(f"dataset {source} does not exist (give a folder-per-class tree "
                                "or a .jsonl / .csv manifest)")
    suffix = source.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return read_jsonl(source)
    if suffix in (".csv", ".tsv"):
        return read_csv(source)
    raise ValueError(f"{source}: unknown dataset format {suffix!r}; use a folder-per-class tree, "
                     "a .jsonl manifest or a .csv manifest")


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def read_folder(root: Path) -> tuple[list[Item], list[Problem]]:
    """``ROOT/CLASS/*`` (or ``ROOT/SPLIT/CLASS/*``); files directly under ROOT are ignored."""
    tops = sorted(d for d in root.iterdir() if d.is_dir() and _visible(d))
    if not tops:
        raise ValueError(f"{root} has no class folders; expected ROOT/CLASS/clip.wav "
                         "(or ROOT/train/CLASS/clip.wav)")
    if all(d.name.lower() in SPLIT_NAMES for d in tops):
        groups = [(d.name, c) for d in tops for c in sorted(x for x in d.iterdir() if x.is_dir() and _visible(x))]
    else:
        groups = [(None, d) for d in tops]
    items, problems = [], []
    for split, cls in groups:
        files = sorted(f for f in cls.rglob("*") if f.is_file() and _visible(f))
        found = 0
        for f in files:
            if f.suffix.lower() not in AUDIO_EXTENSIONS:
                problems.append(Problem("not_audio", str(f), f"not an audio file (extension {f.suffix or 'none'!r}) "
                                        f"in class folder {cls.name!r}"))
                continue
            items.append(Item(f, label=cls.name, split=split))
            found += 1
        if not found:
            problems.append(Problem("empty_class", str(cls), f"class folder {cls.name!r} holds no audio files",
                                    fix="add audio files to it or delete the folder"))
    return items, problems


def _labels_field(value) -> tuple[str, ...] | None:
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            return tuple(str(v) for v in json.loads(s))
        return tuple(v.strip() for v in s.split(";") if v.strip())
    return None


def _item_from(record: dict, base: Path, line: str) -> Item | Problem:
    """An Item from one manifest record, or the Problem that prevents it."""
    path = record.get("path")
    if not isinstance(path, str) or not path.strip():
        return Problem("bad_entry", "(no path)", "the entry has no 'path' field", line)
    full = Path(path) if Path(path).is_absolute() else base / path
    given = [k for k in TARGET_KINDS if record.get(k) not in (None, "")]
    if len(given) != 1:
        what = "none" if not given else " and ".join(given)
        return Problem("bad_entry", str(full), f"needs exactly one of label | labels | text, has {what}", line)
    kind = given[0]
    try:
        target = _labels_field(record[kind]) if kind == "labels" else str(record[kind])
    except json.JSONDecodeError as e:
        return Problem("bad_entry", str(full), f"'labels' is not a list: {e}", line)
    extra = tuple((k, v) for k, v in record.items() if k not in ("path", "split", *TARGET_KINDS))
    split = record.get("split")
    return Item(full, split=str(split) if split not in (None, "") else None, line=line, extra=extra,
                **{kind: target})


def _collect(rows, base: Path) -> tuple[list[Item], list[Problem]]:
    items, problems = [], []
    for line, record in rows:
        out = record if isinstance(record, Problem) else _item_from(record, base, line)
        (problems if isinstance(out, Problem) else items).append(out)
    kinds = {it.kind for it in items}
    if len(kinds) > 1:  # one task per dataset: the first kind wins, the rest are bad entries
        first = items[0].kind
        problems += [it.problem("bad_entry", f"has '{it.kind}' but the manifest's first entry has '{first}'")
                     for it in items if it.kind != first]
        items = [it for it in items if it.kind == first]
    return items, problems


def read_jsonl(path: Path) -> tuple[list[Item], list[Problem]]:
    """One JSON object per line; blank lines and lines starting with # are ignored."""
    def rows():
        with open(path, encoding="utf-8") as f:
            for n, text in enumerate(f, 1):
                text = text.strip()
                if not text or text.startswith("#"):
                    continue
                where = f"{path}:{n}"
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as e:
                    yield where, Problem("bad_entry", "(unparsed)", f"not valid JSON: {e}", where)
                    continue
                if not isinstance(record, dict):
                    yield where, Problem("bad_entry", "(unparsed)", "not a JSON object", where)
                    continue
                yield where, record
    return _collect(rows(), path.parent)


def read_csv(path: Path) -> tuple[list[Item], list[Problem]]:
    """A header row naming the fields, then one clip per row (``.tsv``: tab-separated)."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise ValueError(f"{path}:1: the CSV header must name a 'path' column and one of "
                             f"label | labels | text; found {reader.fieldnames}")
        rows = [(f"{path}:{reader.line_num}", {k: v for k, v in row.items() if k is not None})
                for row in reader]
    return _collect(rows, path.parent)
