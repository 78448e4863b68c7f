"""What `subnet bench` measures: latency, throughput, memory, parameters, FLOPs and size of a
model, compared in one process with its dense base (or any other model).

Both models run interleaved (A B B A ...) after warm-up, on the same random inputs made
for each requested batch size and clip length; CUDA calls are timed with CUDA events
after a synchronisation. A latency ratio is reported as a speedup only when the p10-p90
ranges of the two models do not overlap; otherwise the verdict is "no measurable
difference".
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from subnet_kernels import measured_choices

from ..export import onnx_runner
from .environment import environment
from .flops import count_flops
from .memory import peak_memory
from .timing import compare, interleaved_times, summarize, timer, verdict_text


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


# --- the whole measurement ---------------------------------------------------------------------
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
                    run[k]["flops"] = count_flops(models[k], call=eager[k])
                if memory:
                    fns[k]()  # allocator warm-up, so the peak is the call's, not first-touch costs
                    run[k]["memory"] = peak_memory(fns[k], device)
            times = interleaved_times(fns, repeats, warmup, timed=timed)
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
    report["kernel_choices"] = measured_choices()  # the fused ops' backends, as measured on CUDA
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


