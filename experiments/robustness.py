"""`make robustness`: does an extraction keep the full encoder's robustness outside the training
domain, and which training option helps? (docs/RESULTS.md "Robustness outside the training domain")

For every experiment with shifted test sets (`Experiment.extra_tests`), at two sizes (t = 0.6 and
0.4: about 40% and 60% of the parameters removed) and every seed, the protocol's extraction, the
same with each option of `OPTIONS` (but `LONG_ONLY`'s), and the same with its best state chosen on a
validation set from another domain (`Experiment.shifted_valid`); the probe (full frozen encoder +
head, same data, head, steps) is the reference on every set, the probe trained on augmented clips
a second one. Runs go to OUT/robustness/ (apart from `make results`'
runs, whose reports would otherwise take these in), the data is shared (OUT/data/); two at a
time, one thread each; a finished run is kept, an unfinished one resumes. The table goes into
docs/RESULTS.md between <!-- robustness --> and <!-- /robustness -->.

`--long [N]` asks whether longer training closes the gap: the probes and LONG_METHODS at t = 0.4
with N x the steps (default 4), under OUT/robustness-Nx, into the doc's <!-- robustness-Nx -->
table (`--target T` another size than t = 0.4: its rows are added to the others, and a `--long`
invocation keeps the rows it does not rewrite). Methods that
distil on clips without labels run only where the experiment has those sets
(`Experiment.unlabeled`). `--methods` and `--experiments` train only those; the doc keeps the
other rows.
"""
from __future__ import annotations

import argparse
import re
import statistics
from dataclasses import replace
from pathlib import Path

from .runner import (EXPERIMENTS, OPTIONS, SHIFTED_VALID, TEACHER_OPTIONS, Job, Protocol, load_metrics, prepare_data,
                     run_jobs, teacher_probe, unlabeled_names)

TARGETS = (0.6, 0.4)
UNLABELED = tuple(m for m, o in OPTIONS.items() if o.get("unlabeled"))  # only for experiments with those sets
LONG_ONLY = ("extract+kd+augment+clean-teacher", "extract+all-layers+augment+clean-teacher", *UNLABELED)  # (--long only)
LATER = ("extract+all-layers+augment", *(m for m in TEACHER_OPTIONS if m not in LONG_ONLY))  # planned after the others
# the references: the probe, and the probe trained on augmented clips (what augmentation alone gives the full encoder)
PROBES = ("probe", "probe+augment")
METHODS = (*PROBES, *OPTIONS, SHIFTED_VALID)
MARKERS = ("<!-- robustness -->", "<!-- /robustness -->")
# --long: does training longer close the gap? every run, the probes too, with LONG x the protocol's
# steps (and validations), at the size the goal is about (t = 0.4: about 60% removed)
LONG = 4
LONG_TARGET = 0.4
LONG_METHODS = ("extract", "extract+kd+augment", "extract+kd+all-layers+augment", "extract+kd",
                "extract+all-layers+augment", *LONG_ONLY)


def long_markers(factor: int) -> tuple[str, str]:
    """Where the table of the runs with `factor` x the steps goes in the doc."""
    return f"<!-- robustness-{factor}x -->", f"<!-- /robustness-{factor}x -->"


def plan(experiments, protocol: Protocol) -> list[Job]:
    jobs = []
    for exp in experiments:
        for seed in protocol.seeds:
            jobs += [Job(p, exp.name, seed) for p in PROBES]
            jobs += [Job(method, exp.name, seed, t) for t in TARGETS for method in OPTIONS
                     if method not in LATER and method not in LONG_ONLY]
    for exp in experiments:  # (after the others: later questions)
        jobs += [Job(method, exp.name, seed, t, _teacher(method, exp.name, seed))
                 for method in LATER for seed in protocol.seeds for t in TARGETS]
        if exp.shifted_valid:
            jobs += [Job(SHIFTED_VALID, exp.name, seed, t) for seed in protocol.seeds for t in TARGETS]
    return jobs


def plan_long(experiments, protocol: Protocol, target: float = LONG_TARGET) -> list[Job]:
    """--long's runs (give it the protocol with the longer steps): probes and LONG_METHODS at `target`."""
    jobs = []
    for exp in experiments:
        for seed in protocol.seeds:
            jobs += [Job(p, exp.name, seed) for p in PROBES]
            jobs += [Job(m, exp.name, seed, target, _teacher(m, exp.name, seed)) for m in LONG_METHODS
                     if m not in UNLABELED or _has_unlabeled(exp, m)]
    return jobs


def select(jobs: list[Job], methods) -> list[Job]:
    """The jobs of `methods`, the probes (the reference of every table) and the teachers they wait for."""
    teachers = {d for j in jobs if j.method in methods for d in j.deps}
    return [j for j in jobs if j.method == "probe" or j.method in methods or j in teachers]


def _has_unlabeled(exp, method: str) -> bool:
    """Whether `exp` has every set of clips without labels that `method` distils on."""
    return set(unlabeled_names(OPTIONS[method]["unlabeled"])) <= dict(exp.unlabeled).keys()


def _teacher(method: str, exp: str, seed: int) -> tuple:
    """The jobs a method's run waits for: the probe of its seed (or the augmented one) that is its teacher."""
    return (Job(teacher_probe(method), exp, seed),) if method in TEACHER_OPTIONS else ()


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def table(exp, runs: list[dict]) -> str:
    """One experiment's rows: method x size, the test split and every extra test set, mean +- std
    over seeds, the parameters removed, the training time."""
    sets = ["test"] + [x.label for x in exp.extra_tests]
    head = ("| method | t | removed | " + " | ".join(sets) + " | train s |", "|---" * (len(sets) + 4) + "|")
    rows, counts = [], set()
    targets = sorted({m["t"] for m in runs if m.get("t") is not None}, reverse=True)  # (the sizes there are runs of)
    for method in METHODS:
        for t in (None,) if method in PROBES else targets:
            ms = [m for m in runs if m.get("method") == method and (t is None or m.get("t") == t)]
            if not ms:
                continue
            counts.add(len(ms))
            cells = [_cell([m["compact"] for m in ms])]
            cells += [_cell([m["extra"][s]["value"] for m in ms if s in (m.get("extra") or {})]) for s in sets[1:]]
            removed = statistics.mean(100 * (1 - m["params"]["kept_fraction"]) for m in ms)
            seconds = statistics.mean(m.get("train_seconds", m.get("seconds", 0)) for m in ms)
            rows.append(f"| {method} | {'-' if t is None else f'{t:g}'} | {removed:.1f}% | " + " | ".join(cells)
                        + f" | {seconds:.0f} |")
    clips = {s: next((m["extra"][s]["clips"] for m in runs if s in (m.get("extra") or {})), None) for s in sets[1:]}
    sizes = "; ".join(f"{s}: {n} clips" for s, n in clips.items() if n)
    seeds = "-".join(str(n) for n in sorted({min(counts), max(counts)})) if counts else "0"
    return "\n".join([f"#### {exp.name}: {exp.title}", "",
                      f"Test split: `{exp.recipe}` test; {sizes}; {seeds} seeds a row.", "", *head, *rows]) + "\n"


def _row_key(line: str) -> tuple[str, str] | None:
    """(method, t) of a table row, None for any other line."""
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    return (cells[0], cells[1]) if line.startswith("| ") and cells[0] in METHODS else None


def _order(key: tuple[str, str]) -> tuple[int, float]:
    method, t = key
    return METHODS.index(method), (-1.0 if t == "-" else -float(t))  # larger sizes first


def merge_rows(old: str, new: str) -> str:
    """`new`'s tables with the rows of `old`'s (same experiment heading) that `new` lacks: an
    invocation that ran some methods replaces their rows and keeps the others' rows."""
    kept = {}
    for section in old.split("#### ")[1:]:
        heading = section.splitlines()[0]
        kept[heading] = {k: line for line in section.splitlines() if (k := _row_key(line))}
    out = []
    for n, section in enumerate(new.split("#### ")):
        if n == 0:  # what comes before the first table
            out.append(section)
            continue
        lines = section.splitlines(keepends=True)
        rows = {**kept.get(lines[0].strip(), {}), **{k: line.rstrip("\n") for line in lines if (k := _row_key(line))}}
        body = [line for line in lines if not _row_key(line)]
        at = max(i for i, line in enumerate(body) if line.startswith("|---")) + 1
        body[at:at] = [rows[k] + "\n" for k in sorted(rows, key=_order)]
        out.append("".join(body))
    return "#### ".join(out)


def update_doc(doc: Path, text: str, keep_other_rows: bool = False, markers: tuple = MARKERS) -> bool:
    """Replace the part of `doc` between `markers` with `text` (with `keep_other_rows`, the rows
    of methods `text` lacks stay, `merge_rows`); False when the markers are absent."""
    if not doc.is_file():
        return False
    old = doc.read_text()
    pattern = re.compile(re.escape(markers[0]) + "\n?(.*?)" + re.escape(markers[1]), re.S)
    found = pattern.search(old)
    if not found:
        return False
    if keep_other_rows:
        text = merge_rows(found.group(1), text)
    doc.write_text(pattern.sub(lambda _: f"{markers[0]}\n{text}{markers[1]}", old))
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.robustness",
                                description="Extraction vs extraction with distillation / augmentation / both, "
                                            "on in-domain and shifted test sets (resumable).")
    p.add_argument("--out", default="results", help="OUT/robustness gets the runs, OUT/data the data (shared with "
                   "make results; default: results)")
    p.add_argument("--doc", default="docs/RESULTS.md", help="the page whose robustness table is rewritten")
    p.add_argument("--workers", type=int, default=2, help="training runs at a time (default: 2)")
    p.add_argument("--seeds", type=int, nargs="+", help="override the seeds (default 0 1 2)")
    p.add_argument("--table-only", action="store_true", help="train nothing: write the table from the runs there are")
    p.add_argument("--methods", nargs="+", choices=METHODS[1:], metavar="METHOD",
                   help="run only these methods (and the probe, their reference and teacher); the doc keeps the "
                        f"other methods' rows as they are. Methods: {', '.join(METHODS[1:])}")
    p.add_argument("--long", nargs="?", type=int, const=LONG, metavar="N",
                   help=f"instead: every run (probes too) with N x the steps (default {LONG}), at t={LONG_TARGET:g}, "
                        f"methods {', '.join(LONG_METHODS)}; runs under OUT/robustness-Nx, into the doc's table "
                        "between <!-- robustness-Nx --> and <!-- /robustness-Nx -->")
    p.add_argument("--target", type=float, metavar="T",
                   help=f"with --long: the extractions' size target t (default {LONG_TARGET:g}); the table gets a row "
                        "per method and t")
    shifted = [e.name for e in EXPERIMENTS if e.extra_tests]
    p.add_argument("--experiments", nargs="+", choices=shifted, metavar="NAME",
                   help=f"run only these experiments (default: all of {', '.join(shifted)}); the doc keeps the others' "
                        "tables' rows")
    args = p.parse_args(argv)
    exps = [e for e in EXPERIMENTS if e.extra_tests]  # (every table is written; only the chosen ones train)
    chosen = args.experiments or shifted
    if args.target is not None and not args.long:
        p.error("--target T: only with --long (the 300-step table is at t = " + ", ".join(f"{t:g}" for t in TARGETS) + ")")
    target = LONG_TARGET if args.target is None else args.target
    if not 0 < target < 1:
        p.error(f"--target T: the fraction of the encoder's cost to keep, between 0 and 1, not {target:g}")
    protocol = Protocol() if not args.seeds else Protocol(seeds=tuple(args.seeds))
    root, data_root, markers = Path(args.out) / "robustness", Path(args.out) / "data", MARKERS
    jobs = plan(exps, protocol)
    if args.long:
        if args.long < 1:
            p.error(f"--long N: N is a number of times the protocol's steps, >= 1, not {args.long}")
        protocol = replace(protocol, steps=args.long * protocol.steps, eval_every=args.long * protocol.eval_every)
        root, markers = Path(args.out) / f"robustness-{args.long}x", long_markers(args.long)
        jobs = plan_long(exps, protocol, target)
    if args.methods:
        jobs = select(jobs, args.methods)
    if not args.table_only:
        trained = [e for e in exps if e.name in chosen]
        prepare_data(trained, data_root, protocol.data_size)
        run_jobs([j for j in jobs if j.exp in chosen], root, data_root, protocol, trained, args.workers)
    text = "\n".join(table(e, [m for j in jobs if j.exp == e.name and (m := load_metrics(j, root))]) for e in exps)
    print(text)
    # the doc keeps the rows this invocation does not rewrite: other methods, experiments, or (--long) sizes
    partial = bool(args.methods or args.experiments or args.long)
    if update_doc(Path(args.doc), text, keep_other_rows=partial, markers=markers):
        print(f"robustness: {args.doc} updated")
    else:
        print(f"robustness: {args.doc} has no {markers[0]} ... {markers[1]} section: the table is printed only")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
