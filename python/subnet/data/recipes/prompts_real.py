"""``prompts-real``: the real recorded English voice prompts of Asterisk, without its digits.

Unlabeled audio of a real recording channel: the speaker and telephone-quality recordings of
``digits-real``'s English digits, saying everything else ("agent-pass", "all-circuits-busy-now",
...), so that ``subnet extract --unlabeled`` can distil the full encoder on recordings like the
ones a keyword model meets, while the digits themselves stay unseen. The ``label`` of a clip
is its prompt's name (an identity, not a class); every clip is in split "train". Some prompts
say numbers inside a sentence ("press 1"); the digits/ folder (the single words) is left out, and
so is silence/ (recorded silences, nothing to distil).
"""
from __future__ import annotations

from pathlib import Path

from .digits_real import LANGUAGES, LICENCE, ROOT
from .registry import register
from .tools import ToolMissing

TINY = 40  # prompts in the tiny size
LEFT_OUT = ("digits", "silence")  # folders: the keyword test clips; recorded silences


def prompt_files(root: Path = ROOT) -> list[Path] | None:
    """The English prompts outside LEFT_OUT's folders, sorted; None when the package is not installed."""
    folder = root / LANGUAGES["en"][0]
    if not (folder / "digits").is_dir():
        return None
    return sorted(f for f in folder.rglob("*.wav") if not set(LEFT_OUT) & set(f.relative_to(folder).parts))


@register("prompts-real", "real recorded English voice prompts (Asterisk) without the digits: unlabeled audio "
          "of digits-real's speaker and channel", packages=[LANGUAGES["en"][1]],
          sizes={"tiny": f"the first {TINY} prompts", "small": "every English prompt outside digits/ and silence/",
                 "full": "every English prompt outside digits/ and silence/"})
def build(writer, seed: int, size: str, progress: bool, root: Path = ROOT) -> dict:
    files = prompt_files(root)
    if files is None:
        raise ToolMissing("the Asterisk prompts (en)", [LANGUAGES["en"][1]])
    if size == "tiny":
        files = files[:TINY]
    folder, package, speaker = LANGUAGES["en"]
    for src in files:
        rel = src.relative_to(root / folder)
        writer.copy(f"train/{rel.as_posix()}", src, split="train", label=rel.with_suffix("").as_posix(),
                    source=f"{package}: {src}", licence=LICENCE, language="en", speaker=speaker)
    # the seed changes nothing here: the recordings are fixed; recorded for uniformity
    return {"prompts": len(files)}
