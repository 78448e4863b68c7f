"""The up-front check: open every file's header before training so nothing fails mid-run."""
from __future__ import annotations

from dataclasses import dataclass, field

from .audio import AudioDecodeError, decode
from .errors import BadInputError, Problem, SkipSummary
from .items import AUDIO_EXTENSIONS, Item

# float files are the only ones that can hold NaN; they are decoded in full at validation
_FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}


@dataclass
class Checked:
    """The usable items with their native length and rate, and what was skipped."""

    items: list[Item]
    frames: list[int]
    rates: list[int]
    summary: SkipSummary = field(default_factory=SkipSummary)
    channels: list[int] = field(default_factory=list)

    def seconds(self, i: int) -> float:
        return self.frames[i] / self.rates[i]


def check_file(item: Item) -> tuple[int, int, int]:
    """(frames, sample rate, channels) from the header of ``item.path``; AudioDecodeError if unusable."""
    import soundfile as sf

    path = item.path
    if not path.exists():
        raise AudioDecodeError("missing", "file not found")
    if not path.is_file():
        raise AudioDecodeError("not_audio", "is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioDecodeError("empty", "the file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        if path.suffix.lower() in AUDIO_EXTENSIONS:
            raise AudioDecodeError("corrupt", f"cannot read the audio header ({e})") from None
        raise AudioDecodeError("not_audio", f"not an audio file ({e})") from None
    if info.frames <= 0:
        raise AudioDecodeError("empty", "the file holds no audio samples")
    if info.subtype in _FLOAT_SUBTYPES:
        decode(path)  # raises AudioDecodeError("nan") on NaN/inf
    return int(info.frames), int(info.samplerate), int(info.channels)


def validate(items: list[Item], vocab=None, problems=(), skip_bad: bool = False, progress: bool = True,
             source: str = "", min_seconds: float = 0.0) -> Checked:
    """Check every item (file header, NaN in float files, label in ``vocab``, at least
    ``min_seconds`` of audio: the shortest clip the encoder's front end can encode).

    ``problems`` are already-known ones (from reading the manifest). Without ``skip_bad`` any
    problem raises :class:`BadInputError` listing them all; with it, bad items are dropped and
    counted in ``Checked.summary``. A class whose every file was bad is reported as empty.
    """
    from tqdm.auto import tqdm

    found: list[Problem] = list(problems)
    good, frames, rates, channels = [], [], [], []
    bar = tqdm(items, desc=f"checking {source or 'audio'}", unit="file", disable=not progress or len(items) < 200,
               leave=False)
    for it in bar:
        if vocab is not None:
            unknown = [t for t in it.targets() if t not in vocab]
            if unknown:
                found.append(it.problem("unknown_label", f"label{'s' if len(unknown) > 1 else ''} "
                                        f"{', '.join(map(repr, unknown))} not in the vocabulary"))
                continue
        try:
            n, rate, ch = check_file(it)
        except AudioDecodeError as e:
            found.append(it.problem(e.reason, e.detail))
            continue
        if n < min_seconds * rate:
            found.append(it.problem("too_short", f"{1e3 * n / rate:.1f} ms of audio; the encoder needs at least "
                                                 f"{1e3 * min_seconds:.1f} ms per clip"))
            continue
        good.append(it)
        frames.append(n)
        rates.append(rate)
        channels.append(ch)
    before = {t for it in items if it.kind == "label" for t in it.targets() if vocab is None or t in vocab}
    after = {t for it in good for t in it.targets()}
    for cls in sorted(before - after):
        found.append(Problem("empty_class", cls, f"class {cls!r} has no usable file left",
                             fix="fix its files or add good ones"))
    if found and not skip_bad:
        raise BadInputError(found, source)
    return Checked(good, frames, rates, SkipSummary().update(found), channels)
