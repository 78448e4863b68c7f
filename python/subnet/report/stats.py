"""Numbers a report states: Pareto fronts, means over seeds, the largest pruning within a few
points of the probe, extraction against each baseline paired by seed, kept-unit overlaps."""
from __future__ import annotations

import statistics

import numpy as np

from .runs import KIND_NAME, KIND_ORDER, kept_pct, layer_label, method_order, resolved, setting_of


def lower_is_better(metric: str) -> bool:
    return metric == "cer"


def pareto_front(points, lower_is_better: bool = False) -> set[int]:
    """Indices of the (cost, value) points no other point beats: cost <= and value at least as
    good, one of them strictly."""
    def better_eq(a, b):
        return a <= b if lower_is_better else a >= b
    front = set()
    for i, (c, v) in enumerate(points):
        if not any((cj <= c and better_eq(vj, v) and (cj < c or vj != v))
                   for j, (cj, vj) in enumerate(points) if j != i):
            front.add(i)
    return front


def aggregate(runs):
    """Group seeds of one setting: (method, setting) -> mean kept %, mean/std metric, n."""
    groups: dict[tuple, list[dict]] = {}
    for m in runs:
        groups.setdefault((m["method"], str(setting_of(m, runs))), []).append(m)
    out: dict[str, list[tuple]] = {}
    for (method, _), ms in groups.items():
        ys = [m["compact"] for m in ms]
        out.setdefault(method, []).append((statistics.mean(kept_pct(m) for m in ms), statistics.mean(ys),
                                           statistics.stdev(ys) if len(ys) > 1 else 0.0, len(ys)))
    return {k: sorted(v) for k, v in out.items()}


def kept_matrices(keep: dict) -> dict[str, tuple[list[str], np.ndarray]]:
    """Per unit kind: (row labels, layers x units matrix: 1 kept, 0 removed, NaN no such unit)."""
    out = {}
    for kind in KIND_ORDER:
        names = [n for n, g in keep.items() if g["kind"] == kind]
        if not names:
            continue
        mat = np.full((len(names), max(keep[n]["size"] for n in names)), np.nan)
        for r, n in enumerate(names):
            mat[r, :keep[n]["size"]] = 0
            mat[r, keep[n]["keep"]] = 1
        out[kind] = ([layer_label(n) for n in names], mat)
    return out


def kept_overlap(a: dict, b: dict, kinds=None) -> tuple[float, float]:
    """How alike two artifacts' kept units are (`keep` dicts of one backbone's groups): the
    Jaccard index of their kept units (those of the groups whose kind is in `kinds`, default all,
    pooled: shared / kept by either), and what chance gives it had each artifact kept its own
    number of units in every group at random (expected shared / expected kept by either). Two
    artifacts that keep none of those units are alike: (1, 1)."""
    if set(a) != set(b):
        raise ValueError(f"kept units of different groups cannot be compared: {sorted(set(a) ^ set(b))}")
    shared = either = chance_shared = total = 0.0
    for name, ga in a.items():
        if kinds is not None and ga["kind"] not in kinds:
            continue
        ka, kb = set(ga["keep"]), set(b[name]["keep"])
        shared += len(ka & kb)
        either += len(ka | kb)
        chance_shared += len(ka) * len(kb) / ga["size"]
        total += len(ka) + len(kb)
    if either == 0:
        return 1.0, 1.0
    return shared / either, chance_shared / (total - chance_shared)


def overlap_tables(runs_by_name: dict[str, list[dict]]) -> list[str]:
    """Markdown lines: how much the kept units of every two of `runs_by_name` (name -> artifacts
    of one backbone, e.g. one task's seeds at one target) overlap against chance
    (`kept_overlap`): the mean over every pair of their artifacts, one name's own artifacts
    against each other on the diagonal; over all gated units, then over attention heads (when
    the backbone has any). Upper triangle only: the index is symmetric."""
    import itertools
    names = list(runs_by_name)
    sizes: dict[str, int] = {}  # units per kind
    for g in runs_by_name[names[0]][0]["keep"].values():
        sizes[g["kind"]] = sizes.get(g["kind"], 0) + g["size"]
    counts = ", ".join(f"{sizes[k]} {KIND_NAME[k]}" for k in KIND_ORDER if k in sizes)
    lines = ["How alike are the units two tasks keep? The Jaccard index of their kept units (kept by both / kept "
             "by either), mean over every pair of seeds (on the diagonal: one task's seeds against each other), "
             "and in parentheses the index that units drawn at random with the same number kept in every layer "
             "would give.", ""]
    tables = [(None, f"All gated units ({counts})")] + ([(("head",), "Attention heads")] if "head" in sizes else [])
    for kinds, what in tables:
        rows = [f"| | {' | '.join(names)} |", "|---" * (len(names) + 1) + "|"]
        for i, a in enumerate(names):
            cells = []
            for b in names[i:]:
                pairs = [kept_overlap(x["keep"], y["keep"], kinds)  # a name against itself: its other artifacts
                         for x, y in itertools.product(runs_by_name[a], runs_by_name[b]) if x is not y]
                cells.append(f"{statistics.mean(p[0] for p in pairs):.2f} ({statistics.mean(p[1] for p in pairs):.2f})"
                             if pairs else "-")
            rows.append(f"| {a} | {' | '.join([''] * i + cells)} |")
        lines += [f"{what}:", ""] + rows + [""]
    return lines


def mean_std(ys) -> tuple[float, float]:
    return statistics.mean(ys), statistics.stdev(ys) if len(ys) > 1 else 0.0


def pm(ys) -> str:
    mean, std = mean_std(ys)
    return f"{mean:.4f} +- {std:.4f}"


def extraction_settings(runs, method: str = "extract") -> dict:
    """Extractions (or the runs of `method`, grouped by their reference's t) grouped by target t
    (their seeds): {t: [runs]}, most kept first."""
    groups: dict = {}
    for m in runs:
        if m["method"] == method:
            groups.setdefault(setting_of(m, runs), []).append(m)
    return dict(sorted(groups.items(), key=lambda kv: -statistics.mean(kept_pct(m) for m in kv[1])))


def within_probe_setting(runs, points: float = 1.0, probe: str = "probe", method: str = "extract"):
    """(probe mean, the extraction setting with the most parameters removed whose mean metric
    over seeds is within `points` (absolute: % for accuracy/mAP, CER points) of the mean probe,
    its runs) or None when there is no probe or no extraction. `probe`: the method whose runs are
    the reference ("probe", or "probe-4x": the probe trained 4x longer); `method`: whose settings
    are candidates ("extract", or "refit": the extraction's units with a new head)."""
    probes = [m["compact"] for m in runs if m["method"] == probe]
    settings = extraction_settings(runs, method)
    if not probes or not settings:
        return None
    ref, low, tol = statistics.mean(probes), lower_is_better(runs[0]["metric"]), points / 100
    ok = [(t, ms) for t, ms in settings.items()
          if (statistics.mean(m["compact"] for m in ms) <= ref + tol if low
              else statistics.mean(m["compact"] for m in ms) >= ref - tol)]
    if not ok:
        return ref, None, None
    t, ms = min(ok, key=lambda kv: statistics.mean(kept_pct(m) for m in kv[1]))
    return ref, t, ms


def within_probe(runs, points: float = 1.0, probe: str = "probe", method: str = "extract") -> str | None:
    """The sentence for report.md: the largest removed-parameter fraction (mean over the seeds of
    one setting) whose mean metric is within `points` of the mean probe."""
    found = within_probe_setting(runs, points, probe, method)
    if found is None:
        return None
    ref, t, ms = found
    name = "the probe" if probe == "probe" else "the probe trained with 4x the steps"
    what = "extraction" if method == "extract" else "refit (the extraction's units, a new head)"
    if ms is None:
        return f"no {what} setting is within {points:g} point of {name} ({ref:.4f}, mean over seeds)"
    removed = 100 - statistics.mean(kept_pct(m) for m in ms)
    return (f"{what}: largest removed-parameter fraction within {points:g} point of {name} ({ref:.4f}, mean over "
            f"seeds): **{removed:.1f}%** (t={t}, {runs[0]['metric']} {pm([m['compact'] for m in ms])} over "
            f"{len(ms)} seed(s))")


def baseline_comparison(runs) -> dict:
    """{(method, t): [(extraction value, baseline value)]}: each baseline run paired with the
    extraction it references (same seed, same size)."""
    ext = {resolved(m["run"]): m for m in runs if m["method"] == "extract"}
    pairs: dict[tuple, list] = {}
    for m in runs:
        ref = m.get("reference")
        baseline = m["method"] in ("random", "importance", "refit") or m["method"].startswith("scratch")
        if baseline and ref and resolved(ref) in ext:
            e = ext[resolved(ref)]
            pairs.setdefault((m["method"], setting_of(e, runs)), []).append((e["compact"], m["compact"], e))
    return pairs


def versus_baselines(runs) -> str | None:
    """Extraction against each baseline at the same size: means +- std over seeds, and the
    paired margin (each baseline seed against the extraction of that seed)."""
    pairs = baseline_comparison(runs)
    if not pairs:
        return None
    low = lower_is_better(runs[0]["metric"])
    rows = ["| t | kept params | method | extraction | baseline | margin (paired) | extraction wins |",
            "|---|---|---|---|---|---|---|"]
    for (method, t), ps in sorted(pairs.items(), key=lambda kv: (method_order(kv[0][0]), str(kv[0][1]))):
        margins = [(b - e) if low else (e - b) for e, b, _ in ps]
        kept = statistics.mean(kept_pct(x[2]) for x in ps)
        wins = sum(d > 0 for d in margins)
        rows.append(f"| {t} | {kept:.1f}% | {method} | {pm([p[0] for p in ps])} | {pm([p[1] for p in ps])} | "
                    f"{pm(margins)} | {wins}/{len(margins)} seeds |")
    return "\n".join(rows)


def refit_pairs(runs) -> dict:
    """{(method, t): [(refit value, baseline value)]}: the extraction's own units with a new head
    (refit, what `subnet extract --refit` produces) against every other baseline cut from the
    same extraction (random units with the same counts and the same head training, importance,
    scratch), paired by their reference."""
    by_ref: dict[str, dict[str, float]] = {}
    for m in runs:
        if m.get("reference") and m["method"] not in ("extract", "probe", "probe-4x"):
            by_ref.setdefault(resolved(m["reference"]), {})[m["method"]] = m["compact"]
    ext = {resolved(m["run"]): m for m in runs if m["method"] == "extract"}
    pairs: dict = {}
    for ref, v in by_ref.items():
        if "refit" in v and ref in ext:
            for method, value in v.items():
                if method != "refit":
                    pairs.setdefault((method, setting_of(ext[ref], runs)), []).append((v["refit"], value))
    return pairs


def refit_vs_random_pairs(runs) -> dict:
    """{t: [(refit value, random value)]}: the choice of units alone, head training equal."""
    return {t: ps for (method, t), ps in refit_pairs(runs).items() if method == "random"}


def refit_vs_random(runs) -> str | None:
    """The table for report.md: which units matter, with the head training equal."""
    pairs = refit_vs_random_pairs(runs)
    if not pairs:
        return None
    low = lower_is_better(runs[0]["metric"])
    rows = ["The extraction's units against random units, both with a new head trained the same way (refit vs "
            "random, paired by reference):", "",
            "| t | refit (extraction's units) | random units | margin (paired) | refit wins |", "|---|---|---|---|---|"]
    for t, ps in sorted(pairs.items(), key=lambda kv: str(kv[0])):
        margins = [(b - a) if low else (a - b) for a, b in ps]
        rows.append(f"| {t} | {pm([a for a, _ in ps])} | {pm([b for _, b in ps])} | {pm(margins)} | "
                    f"{sum(d > 0 for d in margins)}/{len(margins)} seeds |")
    return "\n".join(rows)


def wins(pairs: dict, low: bool) -> str:
    """"method wins/sizes, ...": at how many sizes t the candidate's mean beats the method's,
    from {(method, t): [(candidate value, baseline value, ...)]}."""
    wins: dict[str, list[bool]] = {}
    for (method, _), ps in sorted(pairs.items(), key=lambda kv: str(kv[0])):
        margin = statistics.mean((p[1] - p[0]) if low else (p[0] - p[1]) for p in ps)
        wins.setdefault(method, []).append(margin > 0)
    return ", ".join(f"{m} {sum(w)}/{len(w)}" for m, w in sorted(wins.items(), key=lambda kv: method_order(kv[0])))