"""`subnet bench`: latency, throughput, memory, parameters, FLOPs and size of a model,
compared in one process with its dense base (or any other model given with --vs).

Both models run interleaved (A B B A ...) after warm-up, on the same random inputs made
for each requested batch size and clip length; CUDA calls are timed with CUDA events
after a synchronisation. A latency ratio is reported as a speedup only when the p10-p90
ranges of the two models do not overlap; otherwise the verdict is "no measurable
difference".
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .timing import eager_attention
from ..export import ExportError, onnx_runner

NO_DIFFERENCE = "no measurable difference"


# --- the models ----------------------------------------------------------------------------
class Subject:
    """One model under measurement, with what is known about where it came from."""

    def __init__(self, model: nn.Module, source: str, kind: str, file_bytes: int | None):
        from ..families import family_of
        self.family = family_of(model)
        self.info = getattr(model, "subnet_info", None)  # how a compact model was made
        if self.family.name == "whisper":  # a whole Whisper: the encoder is what runs on audio
            model = self.family.encoder(model)[0]
        self.model, self.source, self.kind, self.file_bytes = model.eval(), source, kind, file_bytes

    def describe(self) -> dict:
        tensors = {t.data_ptr(): t for t in self.model.state_dict().values() if t.numel()}
        return {"source": self.source, "kind": self.kind, "class": type(self.model).__name__,
                "family": self.family.name, "params": sum(p.numel() for p in self.model.parameters()),
                "weight_bytes": sum(t.nbytes for t in tensors.values()), "file_bytes": self.file_bytes}


def _files_bytes(path: Path, patterns) -> int | None:
    files = [f for p in patterns for f in path.glob(p) if f.is_file()]
    return sum(f.stat().st_size for f in files) if files else None


def load_subject(src: str) -> Subject:
    """A compact artifact directory, a transformers directory or a builtin backbone name."""
    import subnet
    path = Path(src)
    if (path / "subnet.json").is_file():
        return Subject(subnet.load(path), src, "compact", _files_bytes(path, ["model.safetensors", "subnet.json"]))
    model = subnet.load_backbone(src)
    size = _files_bytes(path, ["*.safetensors", "*.bin"]) if path.is_dir() else None
    return Subject(model, src, "backbone", size)


def dense_base_of(compact: Subject) -> Subject:
    """The compact model's base architecture with random weights (timing needs no weights)."""
    from ..families import family_named
    info = compact.info
    torch.manual_seed(0)
    base = family_named(info.family).build(info.base)
    if hasattr(compact.model, "subnet_front_end"):  # both read clips the same way
        base.subnet_front_end = compact.model.subnet_front_end
    return Subject(base, f"{compact.source} (dense base, random weights)", "dense-base", None)


# --- the inputs ----------------------------------------------------------------------------
def make_inputs(model: nn.Module, family, batch: int, seconds: float, gen: torch.Generator) -> tuple[dict, str]:
    """Random inputs for `batch` clips of `seconds` through the model's front end. Returns
    (inputs, note); the note says when the encoder pads every clip to a longer window.
    Raises ValueError for clips longer than the encoder's window."""
    fe = family.front_end(model)
    note = ""
    if fe.max_samples is not None:
        window = fe.max_samples / fe.sample_rate
        if seconds > window + 1e-9:
            raise ValueError(f"this {family.name} encoder takes at most {window:g} s of audio, not {seconds:g} s")
        if fe.fixed_length and seconds < window - 1e-3:
            note = f"{family.name} pads every clip to its {window:g} s window"
    return fe.example_inputs(batch, seconds, gen), note


def to_device(inputs: dict, device: str, dtype: torch.dtype) -> dict:
    return {k: (v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
                if torch.is_tensor(v) else v) for k, v in inputs.items()}


def shapes(inputs: dict) -> dict:
    return {k: list(v.shape) for k, v in inputs.items() if torch.is_tensor(v)}


# --- measuring -------------------------------------------------------------------------------
def timer(device: str) -> Callable[[Callable], float]:
    """Seconds one call takes: CUDA events after a synchronisation, else perf_counter."""
    if device.startswith("cuda"):
        def timed(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3
        return timed

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return timed


def interleaved_times(fns: dict[str, Callable], repeats: int, warmup: int = 3,
                      timed: Callable[[Callable], float] | None = None) -> dict[str, list[float]]:
    """Per-call seconds of each callable: `warmup` untimed rounds, then `repeats` rounds in
    which every callable runs once, in alternating order (A B, B A, ...) so that neither
    always follows the other."""
    timed = timed or timer("cpu")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name].append(timed(fns[name]))
    return times


def summarize(times: list[float], batch: int, seconds: float) -> dict:
    """Median, p10 and p90 of per-call times, and the throughput they give."""
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else [times[0]] * 9
    med = statistics.median(times)
    return {"median_s": med, "p10_s": q[0], "p90_s": q[-1], "n": len(times),
            "clips_per_s": batch / med, "audio_s_per_s": batch * seconds / med}


def compare(model: dict, baseline: dict) -> dict:
    """Latency of `baseline` over `model` (> 1: the model is faster), with the range the
    p10-p90 spreads allow. A range that contains 1.0 is not a speedup."""
    ratio = baseline["median_s"] / model["median_s"]
    lo, hi = baseline["p10_s"] / model["p90_s"], baseline["p90_s"] / model["p10_s"]
    if lo <= 1.0 <= hi:
        verdict, speedup = NO_DIFFERENCE, None
    else:
        verdict, speedup = ("faster" if lo > 1.0 else "slower"), ratio
    return {"latency_ratio": ratio, "ratio_range": [lo, hi], "speedup": speedup, "verdict": verdict}


def verdict_text(c: dict) -> str:
    if c["speedup"] is None:
        return NO_DIFFERENCE
    lo, hi = c["ratio_range"]
    return f"x{c['speedup']:.2f} ({lo:.2f}-{hi:.2f}) {c['verdict']}"


@torch.no_grad()
def count_flops(fn: Callable, model: nn.Module) -> int:
    """FLOPs of one call on the eager attention path (the counter misses fused SDPA / MHA)."""
    from torch.utils.flop_counter import FlopCounterMode
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with eager_attention(model), FlopCounterMode(display=False) as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return int(counter.get_total_flops())


def _rss_kb(field: str) -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc malloc_trim), so that a call's
    allocations show as new resident pages instead of reusing earlier calls' pages."""
    import ctypes
    import ctypes.util
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@torch.no_grad()
def peak_memory(fn: Callable, device: str) -> dict:
    """Memory one call adds at its peak. CUDA: allocator peak over what was allocated before.
    CPU: resident-set high-water mark over the RSS before, after freed heap pages went
    back to the OS (the mark is reset through /proc/self/clear_refs where Linux allows,
    else only a new process maximum shows: a lower bound)."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {"peak_bytes": peak, "added_bytes": peak - before, "how": "torch.cuda.max_memory_allocated"}
    _release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        before, how = _rss_kb("VmRSS"), "VmHWM after clear_refs"
    except OSError:
        before, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss delta (lower bound)"
    fn()
    peak = _rss_kb("VmHWM") if how.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if before is None or peak is None:
        return {"peak_bytes": None, "added_bytes": None, "how": "unavailable"}
    return {"peak_bytes": peak * 1024, "added_bytes": max(0, peak - before) * 1024, "how": how}


# --- the whole measurement ---------------------------------------------------------------------
def environment(device: str, dtype: str) -> dict:
    info = {"device": platform.processor() or platform.machine(), "torch": torch.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "dtype": dtype,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if device.startswith("cuda"):
        info["device"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    else:
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    info["device"] = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return info


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def run_bench(subjects: dict[str, Subject], batches=(1, 8), seconds=(1.0,), device: str = "cpu",
              dtype: str = "fp32", repeats: int = 15, warmup: int = 3, flops: bool = True,
              memory: bool = True, seed: int = 0, timed=None, compile: str | None = None,
              runtime: str = "torch") -> dict:
    """Measure every subject at every (batch, seconds); the first subject is "the model",
    the second (if any) its baseline. Returns the JSON-able report.

    `compile`: a torch.compile mode ("default", "reduce-overhead": CUDA graphs on a GPU,
    "max-autotune"); every model is then timed (and its memory measured) compiled, compiled for
    the shapes of a configuration before its warm-up; FLOPs are counted on the eager models.
    `runtime`: "torch", or "onnxruntime" (CPU, fp32): every model exported to ONNX for each
    configuration's shapes, checked against PyTorch, and its onnxruntime session timed."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
    if runtime == "onnxruntime" and (device != "cpu" or dtype != "fp32" or compile):
        raise ValueError("--runtime onnxruntime runs fp32 on the CPU, uncompiled: drop --device, --dtype, --compile")
    torch_dtype = DTYPES[dtype]
    names = list(subjects)
    report = {"environment": {**environment(device, dtype), "compiled": compile, "runtime": _runtime_name(runtime)},
              "models": {k: s.describe() for k, s in subjects.items()}, "runs": []}
    timed = timed or timer(device)
    for sec in seconds:
        models = {k: s.family.fit_seconds(s.model, sec).to(device=device, dtype=torch_dtype)
                  for k, s in subjects.items()}
        for b in batches:
            first = names[0]
            inputs, notes = {}, {}
            for k in names:  # the same seed: models of one class get the same inputs
                raw, notes[k] = make_inputs(models[k], subjects[k].family, b, sec,
                                            torch.Generator().manual_seed(seed))
                inputs[k] = to_device(raw, device, torch_dtype)
            eager = {k: _caller(subjects[k].family, m, inputs[k]) for k, m in models.items()}
            if runtime == "onnxruntime":
                fns = {k: onnx_runner(models[k], subjects[k].family, inputs[k]) for k in names}
            else:
                fns = {k: torch.compile(f, mode=compile) for k, f in eager.items()} if compile else eager
            run = {"batch": b, "seconds": sec, "inputs": shapes(inputs[first]),
                   "note": "; ".join(sorted(set(n for n in notes.values() if n)))}
            for k in names:
                run[k] = {}
                if compile:
                    fns[k]()  # compilation happens here, outside warm-up and timing
                if flops:
                    run[k]["flops"] = count_flops(eager[k], models[k])
                if memory:
                    fns[k]()  # allocator warm-up, so the peak is the call's, not first-touch costs
                    run[k]["memory"] = peak_memory(fns[k], device)
            times = interleaved_times(fns, repeats, warmup, timed)
            for k in names:
                run[k].update(summarize(times[k], b, sec), times_s=times[k])
            if len(names) > 1:
                base = run[names[1]]
                run["comparison"] = compare(run[first], base)
                if flops and run[first]["flops"]:
                    ideal = base["flops"] / run[first]["flops"]
                    run["comparison"]["ideal_speedup"] = ideal
                    run["comparison"]["fraction_of_ideal"] = run["comparison"]["latency_ratio"] / ideal
            report["runs"].append(run)
            del inputs, fns, eager
        del models
    return report


RUNTIMES = ("torch", "onnxruntime")


def _runtime_name(runtime: str) -> str:
    if runtime == "onnxruntime":
        import onnxruntime
        return f"onnxruntime {onnxruntime.__version__}"
    return f"torch {torch.__version__}"


def _caller(family, model: nn.Module, inputs: dict) -> Callable:
    @torch.no_grad()
    def call():
        return family.run_probe(model, inputs)
    return call


# --- the table ----------------------------------------------------------------------------------
def _si(n: float) -> str:
    """1234567 -> '1.23M' (FLOPs of tiny and huge models alike)."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


def _mb(n) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MB"


def format_report(report: dict) -> str:
    names = list(report["models"])
    env = report["environment"]
    compiled = f" | torch.compile ({env['compiled']})" if env.get("compiled") else ""
    if env.get("runtime", "").startswith("onnxruntime"):
        compiled += f" | {env['runtime']}"
    lines = [f"{env['device']} | torch {env['torch']} | {env['threads']} threads | {env['dtype']}{compiled}", ""]
    lines.append(f"{'':12s} {'params':>12s} {'weights':>11s} {'file':>11s}  source")
    for k in names:
        m = report["models"][k]
        lines.append(f"{k:12s} {m['params']:>12,d} {_mb(m['weight_bytes']):>11s} {_mb(m['file_bytes']):>11s}  "
                     f"{m['source']}")
    if len(names) > 1:
        a, b = (report["models"][k] for k in names)
        lines.append(f"{'ratio':12s} {a['params'] / max(1, b['params']):>12.3f} "
                     f"{a['weight_bytes'] / max(1, b['weight_bytes']):>11.3f}")
    lines.append("")
    head = f"{'batch':>5s} {'sec':>5s}  " + "  ".join(f"{k + ' ms (p10-p90)':>28s}" for k in names)
    head += f"  {'FLOPs':>15s}  {'clips/s':>8s}  {'peak +MB':>11s}"
    if len(names) > 1:
        head += f"  {'ideal':>6s}  speedup"
    lines.append(head)
    for r in report["runs"]:
        cells = [f"{1e3 * r[k]['median_s']:9.2f} ({1e3 * r[k]['p10_s']:.2f}-{1e3 * r[k]['p90_s']:.2f})"
                 for k in names]
        row = f"{r['batch']:>5d} {r['seconds']:>5g}  " + "  ".join(f"{c:>28s}" for c in cells)
        gf = "/".join(_si(r[k]["flops"]) for k in names) if "flops" in r[names[0]] else "-"
        mem = "/".join("-" if r[k].get("memory", {}).get("added_bytes") is None
                       else f"{r[k]['memory']['added_bytes'] / 2**20:.1f}" for k in names)
        row += f"  {gf:>15s}  {r[names[0]]['clips_per_s']:>8.1f}  {mem:>11s}"
        if "comparison" in r:
            c = r["comparison"]
            ideal = f"x{c['ideal_speedup']:.2f}" if "ideal_speedup" in c else "-"
            row += f"  {ideal:>6s}  {verdict_text(c)}"
        lines.append(row)
        if r["note"]:
            lines.append(f"      ({r['note']})")
    return "\n".join(lines)


# --- the command ----------------------------------------------------------------------------------
class HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default where it has one (not the None / False of optional flags)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) \
                and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _numbers(text: str, kind=float) -> list:
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 or (isinstance(v, float) and not math.isfinite(v)) for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _ints(text: str) -> list[int]:
    return _numbers(text, int)


def _bench(args) -> int:
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("subnet bench: --device cuda, but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_subject(args.src)
    if args.vs:
        subjects = {"model": model, "baseline": load_subject(args.vs)}
    elif model.kind == "compact":
        subjects = {"compact": model, "dense": dense_base_of(model)}
    else:
        subjects = {"model": model}
    try:
        report = run_bench(subjects, args.batch, args.seconds, args.device, args.dtype, args.repeats,
                           args.warmup, flops=not args.no_flops, memory=not args.no_memory,
                           compile=args.compile, runtime=args.runtime)
    except (ValueError, ExportError) as e:  # e.g. more seconds than a Whisper window holds
        raise SystemExit(f"subnet bench: {e}") from None
    print(format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Register `subnet bench` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "bench", help="latency, throughput, memory, FLOPs and size: compact vs dense",
        description="Measure a model (compact artifact directory, transformers directory or builtin "
                    "name) and, in the same process with calls interleaved after warm-up, the model "
                    "it is compared with: --vs, or for a compact artifact its dense base architecture "
                    "(random weights: timing does not depend on them). Inputs are random 16 kHz "
                    "clips through the model's front end. A latency ratio whose p10-p90 range "
                    "contains 1.0 is reported as 'no measurable difference', never as a speedup.",
        formatter_class=HelpFormatter)
    p.add_argument("src", metavar="DIR|SRC", help="compact artifact directory, transformers directory or builtin name")
    p.add_argument("--vs", metavar="DIR|SRC", help="compare with this model instead of the artifact's dense base")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--batch", type=_ints, default="1,8", help="batch sizes, comma-separated")
    p.add_argument("--seconds", type=_numbers, default="1", help="clip lengths in seconds, comma-separated")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="weights and inputs dtype")
    p.add_argument("--repeats", type=int, default=15, help="timed calls per model and configuration")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per model first")
    p.add_argument("--threads", type=int, help="torch CPU threads (unset: torch's choice)")
    p.add_argument("--compile", nargs="?", const="default", choices=["default", "reduce-overhead", "max-autotune"],
                   help="time torch.compile of both models in this mode (compiled before warm-up; fuses the "
                        "elementwise work that pruning does not shrink; reduce-overhead replays CUDA graphs "
                        "on a GPU)")
    p.add_argument("--runtime", choices=RUNTIMES, default="torch",
                   help="what runs the models: PyTorch, or onnxruntime (CPU, fp32: each model exported to "
                        "ONNX for the configuration's shapes, checked against PyTorch, its session timed "
                        "with --threads intra-op threads)")
    p.add_argument("--no-flops", action="store_true", help="skip counting FLOPs")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory call")
    p.add_argument("--json", help="also write the full report (per-call statistics) to this file")
    p.set_defaults(func=_bench)
    return p


def main(argv=None) -> int:
    """`python -m subnet.measure.bench ...`: the same command without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="subnet")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
