"""End-to-end figures: mask-training step vs its floor, compact latency vs the ideal, compaction.

    .venv/bin/python benchmarks/run.py [--quick] [--device cpu|cuda]

Writes benchmarks/results/<device>-<date>.json and the tables in docs/PERFORMANCE.md. Every
number the generator writes there comes from the results files; what was measured by hand
(profiler runs, one-off observations) sits in the doc's hand-written blocks, which a re-render
keeps as they are (`hand_written`, `keep_hand_written`).
Every ratio is measured in one process, variants interleaved after warm-up, medians.
Random-init models of the named shapes (timing does not depend on the weights' values).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers.models.whisper.modeling_whisper import WhisperEncoder

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "python"), str(ROOT), str(ROOT / "benchmarks")]  # runs from a checkout

import subnet  # noqa: E402
from subnet.measure.flops import count_flops  # noqa: E402
from subnet_kernels.timing import interleaved_times, medians  # noqa: E402
from subnet.families.base import apply_slices  # noqa: E402


def whisper_base(seconds: float) -> torch.nn.Module:
    cfg = transformers.WhisperConfig(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048,
                                     num_mel_bins=80, max_source_positions=int(50 * seconds), dropout=0.0)
    return WhisperEncoder(cfg).eval()


def wav2vec2_base() -> torch.nn.Module:
    cfg = transformers.Wav2Vec2Config(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                                      feat_proj_dropout=0.0, layerdrop=0.0)
    return transformers.Wav2Vec2Model(cfg).eval()


def inputs_for(model, batch: int, seconds: float) -> dict:
    g = torch.Generator().manual_seed(0)
    if isinstance(model, WhisperEncoder):
        return {"input_features": torch.randn(batch, 80, model.config.max_source_positions * 2, generator=g)}
    return {"input_values": torch.randn(batch, int(16000 * seconds), generator=g)}


def uniform_keep(mm, fraction: float, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    keep = {}
    for name, group in mm.groups.items():
        k = max(group.min_keep, round(fraction * group.size))
        mask = torch.zeros(group.size, dtype=torch.bool)
        mask[torch.randperm(group.size, generator=g)[:k]] = True
        keep[name] = mask
    return keep


def interleaved(fns: dict, repeats: int, warmup: int = 2, cuda: bool = False) -> dict:
    """Median seconds per call, calls interleaved after warm-up (the one timer: subnet_kernels.timing)."""
    return medians(interleaved_times(fns, repeats, warmup, device="cuda" if cuda else "cpu"))


def training_step(name: str, model, batch: int, seconds: float, repeats: int) -> dict:
    """Mask-training step (all units alive) vs A* (backward through every activation, no gates)
    vs A (frozen encoder, gradient for a head only)."""
    x = inputs_for(model, batch, seconds)
    key = next(iter(x))
    head = torch.nn.Linear(model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.d_model, 8)
    mm = subnet.attach_masks(model)

    def a():
        with mm.gates_removed() as base, torch.no_grad():
            h = base(**x).last_hidden_state
        head(h).square().mean().backward()

    def a_star():
        inp = x[key].clone().requires_grad_(True)
        with mm.gates_removed() as base:
            head(base(**{key: inp}).last_hidden_state).square().mean().backward()

    def step():
        head(mm(**x).last_hidden_state).square().mean().backward()
        mm.zero_grad(set_to_none=True)

    t = interleaved({"A": a, "A*": a_star, "step": step}, repeats)
    mm.detach_backbone()
    return {"model": name, "batch": batch, "seconds": seconds, "A_s": t["A"], "A*_s": t["A*"],
            "step_s": t["step"], "step_over_A*": t["step"] / t["A*"], "A*_over_A": t["A*"] / t["A"]}


def frozen_step(name: str, model, fraction_dead: float, batch: int, seconds: float, repeats: int,
                device: str = "cpu", bf16: bool = False, compile_mode: str | None = None) -> dict:
    """Mask-training step with every unit alive vs with `fraction_dead` of every group frozen
    (`--freeze-dead`: frozen units are not computed), and vs the paper's way of gating (hooks,
    eager attention, every unit computed, Whisper only), interleaved; each on its own copy.
    `compile_mode`: also the all-alive step with the encoder under torch.compile in that mode
    (`--compile`; compiled during the warm-up)."""
    import copy
    from paper_style import paper_style
    x = {k: v.to(device) for k, v in inputs_for(model, batch, seconds).items()}
    width = model.config.d_model if hasattr(model.config, "d_model") else model.config.hidden_size
    head = torch.nn.Linear(width, 8).to(device)
    variants = {"alive": subnet.attach_masks(copy.deepcopy(model)),
                "frozen": subnet.attach_masks(copy.deepcopy(model))}
    if isinstance(model, WhisperEncoder):
        variants["paper"] = paper_style(copy.deepcopy(model))
    if compile_mode:
        variants["compiled"] = subnet.attach_masks(copy.deepcopy(model))
    variants["frozen"].set_keep(uniform_keep(variants["frozen"], 1 - fraction_dead))
    variants["frozen"].freeze_dead()
    variants = {k: mm.to(device) for k, mm in variants.items()}
    calls = {k: torch.compile(mm, mode=compile_mode) if k == "compiled" else mm for k, mm in variants.items()}

    def step_of(k):
        mm, call = variants[k], calls[k]

        def step():
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                h = call(**x).last_hidden_state
            head(h.float()).square().mean().backward()
            mm.zero_grad(set_to_none=True)
        return step

    t = interleaved({k: step_of(k) for k in variants}, repeats, warmup=3 if compile_mode else 2,
                    cuda=device.startswith("cuda"))
    out = {"model": name, "batch": batch, "seconds": seconds, "dead": fraction_dead, "device": device,
           "dtype": "bf16" if bf16 else "fp32",
           "alive_s": t["alive"], "frozen_s": t["frozen"], "frozen_over_alive": t["frozen"] / t["alive"]}
    if "paper" in t:
        out.update(paper_s=t["paper"], alive_over_paper=t["alive"] / t["paper"])
    if "compiled" in t:
        out.update(compile_mode=compile_mode, compiled_s=t["compiled"], compiled_over_alive=t["compiled"] / t["alive"])
        if "paper" in t:
            out["compiled_over_paper"] = t["compiled"] / t["paper"]
    return out


def compact_latency(name: str, model, fraction: float, batch: int, seconds: float, repeats: int) -> dict:
    from subnet.export import onnx_runner
    from subnet.families import family_of
    mm = subnet.attach_masks(model)
    mm.set_keep(uniform_keep(mm, fraction))
    small = subnet.compact(mm)
    mm.detach_backbone()
    x = inputs_for(model, batch, seconds)
    family = family_of(model)

    def eager(m):
        return torch.no_grad()(lambda: m(**x))
    # eager, torch.compile'd (compiled during the warm-up) and onnxruntime (each exported for these
    # shapes and checked against PyTorch first), all six interleaved
    fns = {"dense": eager(model), "compact": eager(small), "dense_compiled": eager(torch.compile(model)),
           "compact_compiled": eager(torch.compile(small)), "dense_ort": onnx_runner(model, family, x),
           "compact_ort": onnx_runner(small, family, x)}
    ms = {k: 1e3 * v for k, v in interleaved(fns, repeats, warmup=3).items()}
    fd, fc = count_flops(model, x), count_flops(small, x)
    out = {"model": name, "kept_units": fraction, "batch": batch, "seconds": seconds, "ideal_flop_ratio": fd / fc}
    for suffix, key in (("", ""), ("_compiled", "compiled_"), ("_ort", "ort_")):
        speed = ms["dense" + suffix] / ms["compact" + suffix]
        out.update({f"{key}dense_ms": ms["dense" + suffix], f"{key}compact_ms": ms["compact" + suffix],
                    f"{key}speedup": speed, f"{key}of_ideal": speed / (fd / fc)})
    return out


def compaction_time(name: str, model, fraction: float, repeats: int) -> dict:
    """One gather_compact over the whole plan vs a plain copy of the same kept bytes."""
    import copy
    mm = subnet.attach_masks(model)
    keep = uniform_keep(mm, fraction)
    groups = mm.groups
    mm.detach_backbone()
    targets = [copy.deepcopy(model) for _ in range(repeats + 2)]
    small = copy.deepcopy(model)
    apply_slices(small, groups, keep)
    kept = [p.detach().clone() for p in small.parameters()]
    it = iter(targets)

    def gather():
        apply_slices(next(it), groups, keep)

    copies = []  # kept alive like the gathered models, so each copy, too, writes fresh pages

    def plain_copy():  # the same bytes into one fresh buffer, as the gather writes them
        copies.append(torch.cat([p.reshape(-1) for p in kept]))

    reused = torch.empty(sum(p.numel() for p in kept), dtype=kept[0].dtype)

    def copy_into_reused():  # the bandwidth floor: no page of the output is new
        torch.cat([p.reshape(-1) for p in kept], out=reused)

    t = interleaved({"gather_compact": gather, "copy": plain_copy, "reused": copy_into_reused}, repeats)
    nbytes = sum(p.numel() * p.element_size() for p in kept)
    return {"model": name, "kept_units": fraction, "kept_MB": nbytes / 1e6,
            "gather_ms": 1e3 * t["gather_compact"], "copy_ms": 1e3 * t["copy"],
            "copy_reused_ms": 1e3 * t["reused"], "gather_over_copy": t["gather_compact"] / t["copy"]}


def front_end_cache_step(name: str, model, batch: int, seconds: float, repeats: int) -> dict:
    """Mask-training step with head and FFN gates only (no gate in the conv front end): the
    front end recomputed vs served from a warm FrontEndCache, interleaved; waveforms in, so
    both pay the same feature computation (log-mel for Whisper)."""
    from contextlib import nullcontext
    from subnet.training.front_end_cache import FrontEndCache
    fe = subnet.family_of(model).front_end(model)
    n = int(fe.sample_rate * seconds)
    waves = torch.randn(batch, n, generator=torch.Generator().manual_seed(0))
    lengths = torch.full((batch,), n)
    mm = subnet.attach_masks(model, kinds=("head", "ffn"))
    width = model.config.d_model if hasattr(model.config, "d_model") else model.config.hidden_size
    head = torch.nn.Linear(width, 8)
    paths = mm.family.front_end_modules(model)
    cache = FrontEndCache()
    cache.install(model, paths)

    def step_of(cached: bool):
        def step():
            ctx = cache.clips(waves, lengths, not fe.fixed_length) if cached else nullcontext()
            with ctx:
                h = mm(**fe.inputs(waves, lengths)).last_hidden_state
            head(h).square().mean().backward()
            mm.zero_grad(set_to_none=True)
        return step

    t = interleaved({"recomputed": step_of(False), "cached": step_of(True)}, repeats)
    cache.remove()
    mm.detach_backbone()
    return {"model": name, "batch": batch, "seconds": seconds, "recomputed_s": t["recomputed"],
            "cached_s": t["cached"], "cached_over_recomputed": t["cached"] / t["recomputed"]}


SECTIONS = ("training_step", "frozen_step", "latency", "compaction", "front_end_cache")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and shorter clips (smoke run)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--only", nargs="+", choices=SECTIONS, help="run these sections; the others are kept from "
                    "today's results file when it has them")
    ap.add_argument("--device", default="cpu", help="cpu (every section, fp32) or cuda (the training-step "
                    "comparison only, bf16 autocast, batch 32 x 10 s and 30 s; results named "
                    "gpu-<device>-<date>.json)")
    ap.add_argument("--render", action="store_true", help="measure nothing: rewrite the doc from today's results "
                    "file (and the latest whole_run.py results)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--doc", default=str(ROOT / "docs" / "PERFORMANCE.md"))
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    reps = args.repeats or (3 if args.quick else 11)
    secs = 1.0 if args.quick else 5.0
    if args.device != "cpu":
        return gpu_main(args, reps)
    todo = set() if args.render else set(args.only or SECTIONS)
    today = datetime.date.today().isoformat()
    out = Path(args.out) / f"cpu-{today}.json"
    # the sections not measured now come from the latest results file (today's, or an earlier day's)
    base = out if out.is_file() else max(Path(args.out).glob("cpu-20??-??-??.json"), default=None)
    old = json.loads(base.read_text()) if base else {}
    res = {k: v for k, v in old.items() if k in SECTIONS}
    measured = {k: old.get("measured", {}).get(k, base.stem[4:]) for k in res}  # section -> date measured
    wb, w2 = (whisper_base(secs), wav2vec2_base()) if todo else (None, None)
    if "training_step" in todo:
        res["training_step"] = []
        for name, m in (("whisper-base", wb), ("wav2vec2-base", w2)):
            res["training_step"].append(training_step(name, m, 8, secs, reps))
            print(res["training_step"][-1], flush=True)
    if "frozen_step" in todo:
        res["frozen_step"] = []
        for name, m in (("whisper-base", wb), ("wav2vec2-base", w2)):
            res["frozen_step"].append(frozen_step(name, m, 0.5, 8, secs, reps,
                                                  compile_mode=None if args.quick else "default"))
            print(res["frozen_step"][-1], flush=True)
    if "latency" in todo:
        res["latency"] = []
        for fraction in (0.5, 0.25):
            for batch in (1, 8):
                res["latency"].append(compact_latency("whisper-base", wb, fraction, batch, secs, reps * 2))
                print(res["latency"][-1], flush=True)
    if "compaction" in todo:
        res["compaction"] = []
        for name, m in (("whisper-base", whisper_base(30.0)), ("wav2vec2-base", w2)):
            res["compaction"].append(compaction_time(name, m, 0.5, reps))
            print(res["compaction"][-1], flush=True)
    if "front_end_cache" in todo:
        res["front_end_cache"] = []
        for name, m in (("whisper-base", wb), ("wav2vec2-base", w2)):
            res["front_end_cache"].append(front_end_cache_step(name, m, 8, secs, reps))
            print(res["front_end_cache"][-1], flush=True)
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "transformers": transformers.__version__, "quick": args.quick}
    measured.update({k: today for k in todo})
    if todo:
        out.write_text(json.dumps({"machine": machine, "measured": measured, **res}, indent=1))
    else:
        out = base or out
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    doc = Path(args.doc)
    old_doc = doc.read_text() if doc.is_file() else ""
    doc.write_text(keep_hand_written(render(res, machine, shown, measured), old_doc))
    print(f"wrote {out} and {args.doc}" if todo else f"wrote {args.doc} from {out}")
    return 0


def gpu_main(args, reps: int) -> int:
    """On a CUDA device: the mask-training step of whisper-base (batch 32, 10 s and Whisper's
    own 30 s window; bf16 autocast) all alive vs half frozen vs paper-style vs all alive under
    torch.compile with CUDA graphs (reduce-overhead), interleaved and synchronised."""
    name = torch.cuda.get_device_name(args.device)
    tag = "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()
    rows = []
    for batch, secs in [(4, 1.0)] if args.quick else [(32, 10.0), (32, 30.0)]:
        rows.append(frozen_step("whisper-base", whisper_base(secs), 0.5, batch, secs, reps, args.device, bf16=True,
                                compile_mode="reduce-overhead"))
        print(rows[-1], flush=True)
        torch.cuda.empty_cache()
    out = Path(args.out) / f"gpu-{tag}-{datetime.date.today().isoformat()}.json"
    out.write_text(json.dumps({"device": name, "torch": torch.__version__, "frozen_step": rows}, indent=1))
    print(f"wrote {out}")
    return 0


def _dates(measured: dict) -> str:
    """' Measured on ...' per date, when the sections come from more than one day's run."""
    days = sorted(set(measured.values()))
    if len(days) < 2:
        return ""
    return " Sections measured on " + "; ".join(
        f"{d}: {', '.join(k for k in SECTIONS if measured.get(k) == d)}" for d in days) + "."


_BLOCK = re.compile(r"(?P<head><!-- hand-written: (?P<name>[\w-]+) [^\n]*-->\n)(?P<text>.*?)"
                    r"(?P<end><!-- end hand-written -->)", re.S)


def hand_written(name: str) -> str:
    """The place of the doc's hand-written block `name` in the rendered text (filled by keep_hand_written)."""
    return f"<!-- hand-written: {name} (benchmarks/run.py keeps this block as it is) -->\n<!-- end hand-written -->"


def keep_hand_written(rendered: str, old_doc: str) -> str:
    """`rendered` with every hand-written block's text copied from `old_doc` (the doc as it is now).
    A block of `old_doc` that `rendered` has no place for is an error, not silently dropped."""
    old = {m["name"]: m["text"] for m in _BLOCK.finditer(old_doc)}
    places = {m["name"] for m in _BLOCK.finditer(rendered)}
    lost = sorted(set(old) - places)
    if lost:
        raise SystemExit(f"the doc's hand-written blocks {lost} have no place in the rendered doc")
    return _BLOCK.sub(lambda m: m["head"] + old.get(m["name"], m["text"]) + m["end"], rendered)


def _share(fractions: list) -> str:
    """The share of units frozen in the frozen_step rows, in words."""
    if len(fractions) > 1:
        raise ValueError(f"frozen_step rows with different shares of frozen units: {fractions}")
    return "part of" if not fractions else "half" if fractions[0] == 0.5 else f"{fractions[0]:.0%} of"


def render(res: dict, machine: dict, source, measured: dict | None = None) -> str:
    """The doc from the results (`res`: a cpu-<date>.json's sections) and the other results files
    in benchmarks/results/, with the hand-written blocks' places left empty (keep_hand_written)."""
    dead = sorted({r["dead"] for r in res.get("frozen_step", [])})
    lines = ["<!-- Written by benchmarks/run.py from benchmarks/results/, except the hand-written blocks, which "
             "it keeps. -->",
             "# Performance", "",
             f"Produced by `.venv/bin/python benchmarks/run.py` ({source}); CPU, {machine['threads']} threads, "
             f"torch {machine['torch']}, fp32, random-init models of the named shapes. Each ratio comes from one "
             "process, variants interleaved after warm-up, medians." + _dates(measured or {}), "",
             "## Mask-training step (all units alive) vs its floor", "",
             "A = frozen encoder + gradient for a head only; A* = backward through every activation (what any "
             "gate training must pay). Target: step <= 1.03 x A*.", "",
             "| model | batch x seconds | A | A* | step | step / A* |", "|---|---|---|---|---|---|"]
    for r in res.get("training_step", []):
        lines.append(f"| {r['model']} | {r['batch']} x {r['seconds']:g} s | {1e3 * r['A_s']:.0f} ms | "
                     f"{1e3 * r['A*_s']:.0f} ms | {1e3 * r['step_s']:.0f} ms | {r['step_over_A*']:.2f} |")
    lines += ["", f"## Mask-training step with {_share(dead)} the units frozen (`--freeze-dead`)", "",
              f"{_share(dead).capitalize()} of every group's units frozen, so not computed (the forward runs a copy "
              "shrunk to the others); the paper-style step gates every unit with forward hooks and eager attention; "
              "compiled: all alive, the encoder under `torch.compile` (`--compile default`; compiled during "
              "the warm-up, so the compile time is not in the figure). Target: frozen <= 0.65 x alive.", "",
              f"| model | batch x seconds | all alive | {f'{dead[0]:.0%} ' if dead else ''}frozen | frozen / alive | "
              "paper-style | alive speedup over paper-style | compiled | compiled / alive |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in res.get("frozen_step", []):
        paper = (f"{1e3 * r['paper_s']:.0f} ms | {r['alive_over_paper'] ** -1:.2f}x"
                 if "paper_s" in r else "- | -")
        compiled = f"{1e3 * r['compiled_s']:.0f} ms | {r['compiled_over_alive']:.2f}" if "compiled_s" in r else "- | -"
        lines.append(f"| {r['model']} | {r['batch']} x {r['seconds']:g} s | {1e3 * r['alive_s']:.0f} ms | "
                     f"{1e3 * r['frozen_s']:.0f} ms | {r['frozen_over_alive']:.2f} | {paper} | {compiled} |")
    lines += ["", "## Compact model latency vs the ideal FLOP-ratio speedup", "",
              "Uniformly random units kept in every group. Target: >= 0.95 of the ideal. Eager PyTorch; both models "
              "under `torch.compile` (`subnet bench --compile`), which fuses the elementwise work over the unpruned "
              "residual stream (LayerNorms, residual adds, bias adds) that pruning does not shrink; and both "
              "exported to ONNX and run in onnxruntime (`subnet bench --runtime onnxruntime`: all graph "
              "optimisations, the same threads; each graph checked against PyTorch first). Ideal: the FLOP ratio "
              "(torch.utils.flop_counter).", "",
              "| model | kept units | batch | ideal | eager: dense | compact | speedup | of ideal | "
              "compiled: dense | compact | speedup | of ideal | onnxruntime: dense | compact | speedup | of ideal |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res.get("latency", []):
        row = f"| {r['model']} | {r['kept_units']:.0%} | {r['batch']} | {r['ideal_flop_ratio']:.2f}x |"
        for key in ("", "compiled_", "ort_"):
            if f"{key}speedup" in r:
                row += (f" {r[f'{key}dense_ms']:.1f} ms | {r[f'{key}compact_ms']:.1f} ms | "
                        f"{r[f'{key}speedup']:.2f}x | {r[f'{key}of_ideal']:.2f} |")
            else:
                row += " - | - | - | - |"
        lines.append(row)
    ort_rows = [r for r in res.get("latency", []) if "ort_of_ideal" in r]
    if ort_rows:
        ort = [r["ort_of_ideal"] for r in ort_rows]
        faster = all(r["ort_dense_ms"] < r["dense_ms"] and r["ort_compact_ms"] < r["compact_ms"] for r in ort_rows)
        lines += ["", f"In onnxruntime both models run at {min(ort):.2f}-{max(ort):.2f} of the ideal in these rows"
                  + (", and faster than eager PyTorch (which part of the fixed cost it removes was not profiled)"
                     if faster else "") + ". The export is `subnet export DIR --format onnx`; "
                  "`subnet bench DIR --runtime onnxruntime` measures it for any artifact."]
    lines += ["", hand_written("latency-profile")]
    lines += ["", "## Conv front end cached (`FrontEndCache`)", "",
              "Gates on heads and FFN neurons only (`--kinds head ffn`), so the conv front end is a fixed function "
              "of the clip: recomputed every step vs served from a warm per-clip cache (what every epoch after the "
              "first gets). Waveforms in; the feature computation (log-mel) is paid by both.", "",
              "| model | batch x seconds | recomputed | cached | cached / recomputed |", "|---|---|---|---|---|"]
    for r in res.get("front_end_cache", []):
        lines.append(f"| {r['model']} | {r['batch']} x {r['seconds']:g} s | {1e3 * r['recomputed_s']:.0f} ms | "
                     f"{1e3 * r['cached_s']:.0f} ms | {r['cached_over_recomputed']:.2f} |")
    lines += ["", "## Compaction: one gather_compact vs a plain copy of the kept bytes", "",
              "Target: <= 1.5 x the copy. Both write fresh memory, as a new compact model must; the last column "
              "copies into a buffer already mapped, the memory-bandwidth floor.", "", hand_written("compaction"), "",
              "| model | kept | gather | copy | ratio | copy into a mapped buffer |", "|---|---|---|---|---|---|"]
    for r in res.get("compaction", []):
        floor = f"{r['copy_reused_ms']:.1f} ms" if "copy_reused_ms" in r else "-"
        lines.append(f"| {r['model']} | {r['kept_MB']:.0f} MB | {r['gather_ms']:.1f} ms | {r['copy_ms']:.1f} ms | "
                     f"{r['gather_over_copy']:.2f} | {floor} |")
    latest = {}  # backbone -> its latest whole-run file (names end in the date)
    for path in sorted((ROOT / "benchmarks" / "results").glob("whole-run-cpu-*.json")):
        latest[json.loads(path.read_text())["backbone"]] = path
    if latest:
        from whole_run import render_whole_run
        runs = {b: json.loads(p.read_text()) for b, p in latest.items()}
        warmups = sorted({w["warmup_steps"] for w in runs.values() if "warmup_steps" in w})
        warmup = f"an untimed warm-up of {'/'.join(map(str, warmups))} steps each" if warmups else "an untimed warm-up"
        lines += ["", "## A whole extraction run: paper-style vs subnet", "",
                  "`benchmarks/whole_run.py`: kws-tts, the protocol of `make results` at the t below, seed 0; the "
                  "variants' runs advance in lockstep in one process (at every step each variant reads its batch, "
                  "the same for all, trains on it and validates when due, in an order that rotates from step to "
                  f"step; each variant's own steps timed), after {warmup}; test "
                  "metric of the compact model. Target: >= 1.5x faster than paper-style at a metric within 0.5 point."]
        for backbone, path in latest.items():
            w = runs[backbone]
            lines += ["", f"{backbone} ({path.relative_to(ROOT)}; t={w['t']:g}, {w['machine']['threads']} threads):",
                      "", render_whole_run(w["rows"], w["steps"])]
        lines += ["", hand_written("whole-run")]
    aligned = sorted((ROOT / "benchmarks" / "results").glob("align-effect-cpu-*.json"))
    if aligned:
        from align_effect import render as render_align
        a = json.loads(aligned[-1].read_text())
        lines += ["", "## Hardware-aligned compaction (`--align N`)", "",
                  f"`benchmarks/align_effect.py` ({aligned[-1].relative_to(ROOT)}), {a['threads']} threads"
                  + (f", {a['repeats']} interleaved calls per model" if "repeats" in a else "") + ".",
                  "", hand_written("align"), "", render_align(a["rows"], a["run"])]
    from gpu_report import render_gpu
    lines += render_gpu(ROOT / "benchmarks" / "results")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
