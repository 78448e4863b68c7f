"""Bad input: one record per problem, an error that names them, and a skip summary.

Every check in the data layer reports a :class:`Problem` (which file, which manifest line,
what is wrong, how to fix it). Callers either raise :class:`BadInputError` with all problems
found, or, with ``skip_bad=True``, drop the items and count them in a :class:`SkipSummary`
so that nothing disappears without a trace.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

# reason -> the fix we suggest when the problem's own text has none
FIXES = {
    "missing": "correct the path or remove the entry",
    "empty": "re-export the file or remove the entry",
    "corrupt": "re-encode the file (e.g. ffmpeg -i IN -ar 16000 OUT.wav) or remove the entry",
    "not_audio": "remove the file or move it out of the dataset",
    "nan": "the file holds NaN/inf samples: re-export it or remove the entry",
    "unknown_label": "use a label of the vocabulary or train with a vocabulary that has it",
    "empty_class": "add audio files for the class or remove it",
    "bad_entry": "fix the manifest line (fields: path and one of label | labels | text, optional split)",
    "too_short": "remove the entry or use a longer recording",
}


@dataclass(frozen=True)
class Problem:
    """One bad input. ``file`` is the audio file (or folder), ``line`` "manifest:N" if any."""

    reason: str
    file: str
    detail: str
    line: str | None = None
    fix: str | None = None

    @property
    def where(self) -> str:
        return f"{self.line}: {self.file}" if self.line else self.file

    def __str__(self) -> str:
        return f"{self.where}: {self.detail} (fix: {self.fix or FIXES.get(self.reason, 'remove the entry')})"


class BadInputError(ValueError):
    """Raised with every problem found up front (or the one found at decode time)."""

    def __init__(self, problems: list[Problem], source: str = "", shown: int = 10):
        self.problems = list(problems)
        head = f"{len(self.problems)} bad input{'s' if len(self.problems) != 1 else ''}"
        lines = [f"{head}{' in ' + source if source else ''}:"]
        lines += [f"  {p}" for p in self.problems[:shown]]
        if len(self.problems) > shown:
            lines.append(f"  ... and {len(self.problems) - shown} more")
        lines.append("Fix them, or pass skip_bad=True (--skip-bad) to skip them and count them in the summary.")
        super().__init__("\n".join(lines))


class SkipSummary:
    """What was skipped and why: ``as_dict()`` gives reason -> {count, examples}."""

    def __init__(self, examples: int = 5):
        self._examples = examples
        self.counts: dict[str, int] = defaultdict(int)
        self.examples: dict[str, list[str]] = defaultdict(list)

    def add(self, problem: Problem) -> None:
        """Count one skipped input (keeping the first few as examples)."""
        self.counts[problem.reason] += 1
        if len(self.examples[problem.reason]) < self._examples:
            self.examples[problem.reason].append(str(problem))

    def update(self, problems) -> "SkipSummary":
        for p in problems:
            self.add(p)
        return self

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict:
        """JSON-ready: {reason: {"count": n, "examples": [...]}}."""
        return {r: {"count": self.counts[r], "examples": list(self.examples[r])} for r in sorted(self.counts)}

    def __bool__(self) -> bool:
        return self.total > 0

    def __str__(self) -> str:
        if not self.total:
            return "skipped 0 inputs"
        parts = ", ".join(f"{self.counts[r]} {r}" for r in sorted(self.counts))
        return f"skipped {self.total} input{'s' if self.total != 1 else ''}: {parts}"
