"""``digits-real``: the real recorded digits 0-9 of the Asterisk voice prompt packages.

Labels are the English digit words ("zero".."nine") in every language, so a keyword model
trained on English TTS words can be tested on real recorded speech. Files are copied byte
for byte (8 kHz, 16-bit). All clips are in split "test".
"""
from __future__ import annotations

from pathlib import Path

from .kws_tts import DIGITS
from .registry import register
from .tools import ToolMissing

ROOT = Path("/usr/share/asterisk/sounds")
LICENCE = "CC-BY-SA-3.0 (Asterisk core sound prompts, Digium/Sangoma)"
# language -> (prompt folder, Debian package, speaker)
LANGUAGES = {
    "en": ("en_US_f_Allison", "asterisk-core-sounds-en-wav", "Allison (f)"),
    "es": ("es_MX_f_Allison", "asterisk-core-sounds-es-wav", "Allison (f)"),
    "fr": ("fr_CA_f_June", "asterisk-core-sounds-fr-wav", "June (f)"),
    "it": ("it_IT_m_Carlo", "asterisk-core-sounds-it-wav", "Carlo (m)"),
    "ru": ("ru_RU_f_IvrvoiceRU", "asterisk-core-sounds-ru-wav", "IvrvoiceRU (f)"),
}


def digit_files(lang: str, root: Path = ROOT) -> list[Path] | None:
    """digits/0.wav .. 9.wav of ``lang``, or None when its package is not installed."""
    folder = root / LANGUAGES[lang][0] / "digits"
    files = [folder / f"{d}.wav" for d in range(10)]
    return files if all(f.is_file() for f in files) else None


@register("digits-real", "real recorded digits 0-9 (Asterisk prompts: en + es/fr/it/ru), English labels",
          packages=[p for _, p, _ in LANGUAGES.values()],
          sizes={"tiny": "English only (10 clips)", "small": "every installed language (en required)",
                 "full": "all five languages (all required)"})
def build(writer, seed: int, size: str, progress: bool, root: Path = ROOT) -> dict:
    langs = ["en"] if size == "tiny" else list(LANGUAGES)
    found = {lang: digit_files(lang, root) for lang in langs}
    required = langs if size == "full" else ["en"]
    missing = [lang for lang in required if found[lang] is None]
    if missing:
        raise ToolMissing(f"the Asterisk prompts ({', '.join(missing)})", [LANGUAGES[x][1] for x in missing])
    for lang in langs:
        if found[lang] is None:  # optional below "full": say so, with the command
            writer.leave_out("language not installed", f"{lang}: apt-get install -y {LANGUAGES[lang][1]}")
            writer.notes.append(f"{lang} left out: apt-get install -y {LANGUAGES[lang][1]} adds it")
            continue
        folder, package, speaker = LANGUAGES[lang]
        for d, src in enumerate(found[lang]):
            writer.copy(f"test/{DIGITS[d]}/{lang}_{d}.wav", src, split="test", label=DIGITS[d],
                        source=f"{package}: {src}", licence=LICENCE, language=lang, speaker=speaker)
    # the seed changes nothing here: the recordings are fixed; recorded for uniformity
    return {"languages": [x for x in langs if found[x] is not None]}
