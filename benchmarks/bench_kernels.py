"""Kernel benchmarks: each subnet_kernels op against its baseline, in one process.

Candidates and baselines run interleaved (A B A B ...) after warm-up; we report medians and
ratios (baseline time / candidate time, > 1 means the kernel is faster) with the machine and
versions, and write benchmarks/results/kernels-<device>.json. Inputs are random, never zeros.

    python benchmarks/bench_kernels.py                 # everything this machine can run
    python benchmarks/bench_kernels.py --only gated_act --reps 15

CPU targets (issue 3): C++ gated_act fwd+bwd >= 2x the eager composite at (8, 500, 3072)
fp32; gather_compact of a wav2vec2-base 50% plan within 1.5x of a plain copy of its bytes.

On CUDA every row also has its roofline (issue 20): the bytes the op must move (read +
write, once each) and its FLOPs over the time, as GB/s and TFLOP/s and as fractions of the
device's copy bandwidth (a 1 GiB device-to-device copy) and dense bf16 peak (an 8192^3
matmul), both measured in the same run. The same bytes and FLOPs are used for a candidate
and its baseline (effective rates: eager PyTorch moves more bytes than that minimum). Rows
"auto" run the backend subnet_kernels.select measured fastest for that shape.
GPU targets: gated_act fwd >= 2x eager, fwd+bwd >= 1.5x eager and >= 80% of the copy
bandwidth; gather_compact >= 60% of the copy; gated_attention fwd+bwd >= 0.9x SDPA + gate
with every head alive, >= 1.6x with half the heads dead.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "python")]
import subnet_kernels as sk  # noqa: E402
from subnet.measure.environment import environment  # noqa: E402
from subnet_kernels.timing import interleaved_times, medians  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


@contextlib.contextmanager
def backend(name):
    """Forces SUBNET_KERNEL_BACKEND=name inside the block."""
    before = os.environ.get("SUBNET_KERNEL_BACKEND")
    os.environ["SUBNET_KERNEL_BACKEND"] = name
    try:
        yield
    finally:
        if before is None:
            del os.environ["SUBNET_KERNEL_BACKEND"]
        else:
            os.environ["SUBNET_KERNEL_BACKEND"] = before


def compare(fns: dict, device: str, reps: int, warmup: int = 2) -> dict:
    """Median seconds of each callable, measured interleaved (the one timer: subnet_kernels.timing)."""
    return medians(interleaved_times(fns, reps, warmup, device=device))


def roofline(device, reps) -> dict:
    """This device's copy bandwidth (GB/s, read + write) and dense bf16 matmul rate (TFLOP/s),
    measured now; {} off CUDA."""
    if device != "cuda":
        return {}
    src = torch.empty(2**28, device=device).normal_()  # 1 GiB
    dst = torch.empty_like(src)
    copy_s = compare({"copy": lambda: dst.copy_(src)}, device, reps)["copy"]
    del src, dst
    n = 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    mm_s = compare({"mm": lambda: a @ b}, device, reps)["mm"]
    del a, b
    torch.cuda.empty_cache()
    roof = {"copy_GBps": 2 * 2**30 / copy_s / 1e9, "bf16_peak_TFLOPs": 2 * n**3 / mm_s / 1e12}
    print(f"roofline: copy {roof['copy_GBps']:.0f} GB/s, dense bf16 matmul {roof['bf16_peak_TFLOPs']:.0f} TFLOP/s")
    return roof


def report(rows, title, med, baseline, candidates, extra=None, work=None, roof=None):
    """One row per candidate against `baseline`. work = (bytes, flops) of one call (flops 0
    for elementwise ops): with `roof` (see roofline), the rates and fractions of the roofline."""
    for cand in candidates:
        ratio = med[baseline] / med[cand]
        row = {"bench": title, "candidate": cand, "baseline": baseline,
               "candidate_ms": med[cand] * 1e3, "baseline_ms": med[baseline] * 1e3,
               "speedup": ratio, **(extra or {})}
        line = (f"{title:48s} {cand:>22s} {med[cand] * 1e3:8.3f} ms  {baseline:>10s} "
                f"{med[baseline] * 1e3:8.3f} ms  x{ratio:5.2f}")
        if work is not None and roof:
            nbytes, flops = work
            row.update(bytes=nbytes, flops=flops)
            for who in ("candidate", "baseline"):
                secs = med[cand if who == "candidate" else baseline]
                row[f"{who}_GBps"] = nbytes / secs / 1e9
                row[f"{who}_of_copy"] = row[f"{who}_GBps"] / roof["copy_GBps"]
                if flops:
                    row[f"{who}_TFLOPs"] = flops / secs / 1e12
                    row[f"{who}_of_peak"] = row[f"{who}_TFLOPs"] / roof["bf16_peak_TFLOPs"]
            line += f"  {row['candidate_GBps']:6.0f} GB/s ({row['candidate_of_copy']:4.0%} of copy)"
            if flops:
                line += f"  {row['candidate_TFLOPs']:6.1f} TFLOP/s ({row['candidate_of_peak']:4.0%} of bf16 peak)"
        rows.append(row)
        print(line)


def _auto(op, *inputs, **mode):
    """The backend subnet_kernels.select measures fastest here, printed with its reason."""
    choice = sk.select(op, *inputs, **mode)
    print(f"  select: {op} -> {choice.backend}: {choice.reason}")
    return choice.backend


# --- gated_act ------------------------------------------------------------------------

def bench_gated_act(rows, device, reps, roof, shape=(8, 500, 3072), dtype=torch.float32):
    n = shape[-1]
    x = torch.randn(shape, device=device, dtype=dtype)
    b = torch.randn(n, device=device, dtype=dtype)
    g = (torch.rand(n, device=device) > 0.5).to(dtype) + 0.0
    dy = torch.randn(shape, device=device, dtype=dtype)
    leaves = [t.clone().requires_grad_() for t in (x, b, g)]
    nbytes = x.numel() * x.element_size()  # one pass over x-sized memory

    def eager_fwd():
        with torch.no_grad():
            return g * F.gelu(x + b)

    def eager_both():
        xs, bs, gs = leaves
        y = gs * F.gelu(xs + bs)
        return torch.autograd.grad(y, (xs, bs, gs), dy)

    def kernel_fwd():
        with torch.no_grad():
            return sk.gated_act(x, b, g, "gelu")

    def kernel_both():
        xs, bs, gs = leaves
        return torch.autograd.grad(sk.gated_act(xs, bs, gs, "gelu"), (xs, bs, gs), dy)

    names = [n for n in ("cuda", "triton", "cpp") if not dict(
        sk.dispatch.reasons("gated_act", x, b, g))[n]]
    title = f"gated_act gelu {tuple(shape)} {str(dtype)[6:]}"
    for name in names:
        with backend(name):
            med = compare({"eager": eager_fwd, name: kernel_fwd}, device, reps)
            report(rows, title + " fwd", med, "eager", [name], work=(2 * nbytes, 0), roof=roof)
            med = compare({"eager": eager_both, name: kernel_both}, device, reps)
            report(rows, title + " fwd+bwd", med, "eager", [name], work=(5 * nbytes, 0), roof=roof)
    if device == "cuda":  # what the dispatcher picks, measured
        auto = f"auto ({_auto('gated_act', *leaves, act='gelu', grad=True)})"
        med = compare({"eager": eager_both, auto: kernel_both}, device, reps)
        report(rows, title + " fwd+bwd", med, "eager", [auto], work=(5 * nbytes, 0), roof=roof)


# --- gather_compact -------------------------------------------------------------------

def wav2vec2_base_plan(device, dtype=torch.float32, keep=0.5, seed=0):
    """Sources and a plan shaped like pruning wav2vec2-base to `keep` of its units: the
    7 conv layers' 512 channels (out of layer i, in of layer i+1, the feature projection's
    inputs), 12 layers x 12 heads x 64 (q/k/v rows, out_proj columns) and the FFN's 3072
    neurons (fc1 rows + bias, fc2 columns); biases and norms of kept dims are copied whole."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    def subset(n, k):
        return torch.randperm(n, generator=gen)[:k].sort().values

    sources, plans = [], []

    def add(t, index):
        sources.append(t)
        plans.append((len(sources) - 1, index))

    kernels = [10, 3, 3, 3, 3, 2, 2]
    ch = int(512 * keep)
    prev = None
    for i, k in enumerate(kernels):
        cur = subset(512, ch)
        add(rand(512, 1 if i == 0 else 512, k), (cur, None if i == 0 else prev, None))
        prev = cur
    add(rand(512), (prev,))                                   # feature projection layer norm
    add(rand(768, 512), (None, prev))                         # feature projection
    heads = int(12 * keep)
    for _ in range(12):
        kept_heads = subset(12, heads)
        rows = (kept_heads[:, None] * 64 + torch.arange(64)).reshape(-1)
        for _ in range(3):                                    # q, k, v
            add(rand(768, 768), (rows, None))
            add(rand(768), (rows,))
        add(rand(768, 768), (None, rows))                     # out_proj
        add(rand(768), (None,))
        neurons = subset(3072, int(3072 * keep))
        add(rand(3072, 768), (neurons, None))                 # FFN in
        add(rand(3072), (neurons,))
        add(rand(768, 3072), (None, neurons))                 # FFN out
        for _ in range(3):                                    # FFN out bias, 2 layer norms
            add(rand(768), (None,))
    return sources, plans


def bench_gather(rows, device, reps, roof):
    sources, plans = wav2vec2_base_plan(device)
    table = sk.build_table(sources, plans)
    src_bytes = sum(s.numel() for s in sources) * 4
    flat = torch.cat([s.reshape(-1) for s in sources])[: table.total].contiguous()
    extra = {"out_MB": table.total * 4 / 2**20, "source_MB": src_bytes / 2**20,
             "outputs": len(plans)}
    print(f"wav2vec2-base 50% plan: {len(plans)} outputs, {extra['out_MB']:.1f} MB kept of "
          f"{extra['source_MB']:.1f} MB")

    def copy():
        return flat.clone()

    def per_tensor():
        return sk.reference.gather_compact(sources, plans)

    fns = {"copy": copy, "index_select": per_tensor}
    names = [n for n in ("cuda", "triton", "cpp") if not dict(
        sk.dispatch.reasons("gather_compact", sources))[n]]
    for name in names:
        def run(name=name):
            with backend(name):
                return sk.gather_compact_flat(sources, table)
        fns[name] = run
    med = compare(fns, device, reps)
    # bytes: the kept elements read once and written once; the copy moves exactly those
    report(rows, "gather_compact wav2vec2-base 50%", med, "copy", names + ["index_select"], extra,
           work=(2 * table.total * 4, 0), roof=roof)
    if device == "cuda":
        for name in names:
            bw = 2 * table.total * 4 / med[name] / 1e9
            copy_bw = 2 * table.total * 4 / med["copy"] / 1e9
            print(f"  {name}: {bw:.0f} GB/s vs a copy of the same bytes {copy_bw:.0f} GB/s ({bw / copy_bw:.0%})")


# --- gated_attention ------------------------------------------------------------------

def bench_attention(rows, device, reps, roof):
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    configs = [(8, 12, t, 64) for t in (500, 1500)] if device == "cuda" else [(2, 6, 500, 64)]
    for (bsz, heads, t, d) in configs:
        q, k, v = (torch.randn(bsz, heads, t, d, device=device, dtype=dtype) for _ in range(3))
        dy = torch.randn_like(q)
        alive = torch.ones(heads, device=device)
        half = alive.clone()
        half[heads // 2:] = 0
        leaves = [t_.clone().requires_grad_() for t_ in (q, k, v)]
        # nominal work of the whole problem (every head), fwd + bwd: 3.5x the forward's
        # 4 B H T^2 D FLOPs; bytes: q, k, v, y, o in, dy, o, q, k, v read and dq, dk, dv out
        work = (13 * q.numel() * q.element_size(), 3.5 * 4 * bsz * heads * t * t * d)

        def sdpa_both():
            gate = alive.clone().requires_grad_()
            y = F.scaled_dot_product_attention(*leaves) * gate[None, :, None, None]
            return torch.autograd.grad(y, (*leaves, gate), dy)

        def ours(gate_values, train_gate=True):
            def run():
                gate = gate_values.clone().requires_grad_(train_gate)
                y = sk.gated_attention(*leaves, gate)
                return torch.autograd.grad(y, (*leaves, gate) if train_gate else leaves, dy)
            return run

        title = f"gated_attention fwd+bwd B{bsz} H{heads} T{t} D{d} {str(dtype)[6:]}"
        why = dict(sk.dispatch.reasons("gated_attention", q, k, v, alive, None))
        chosen = "triton" if not why["triton"] else "reference"
        with backend(chosen):
            med = compare({"sdpa+gate": sdpa_both, chosen: ours(alive),
                           f"{chosen} half dead": ours(half),
                           f"{chosen} half dead, gate frozen": ours(half, train_gate=False)}, device, reps)
        report(rows, title, med, "sdpa+gate", [chosen, f"{chosen} half dead",
                                                f"{chosen} half dead, gate frozen"], work=work, roof=roof)
        print(f"  half the heads dead: x{med[chosen] / med[chosen + ' half dead']:.2f} "
              f"faster than all alive (x{med[chosen] / med[chosen + ' half dead, gate frozen']:.2f} with the gate frozen)")
        if device == "cuda":
            for label, gate_values in (("auto", alive), ("auto half dead", half)):
                picked = _auto("gated_attention", *leaves, gate_values.clone().requires_grad_(), None,
                               grad=True, dead_o=True)
                med = compare({"sdpa+gate": sdpa_both, f"{label} ({picked})": ours(gate_values)}, device, reps)
                report(rows, title, med, "sdpa+gate", [f"{label} ({picked})"], work=work, roof=roof)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=11)
    parser.add_argument("--only", choices=["gated_act", "gather", "attention"], action="append")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--out", default=str(RESULTS), help="folder of the results file (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    only = set(args.only or ["gated_act", "gather", "attention"])
    env = environment(args.device)
    print(json.dumps(env))
    roof = roofline(args.device, args.reps)
    env.update(roof)
    if "gated_act" in only:
        bench_gated_act(rows, args.device, args.reps, roof)
        if args.device == "cuda":
            bench_gated_act(rows, args.device, args.reps, roof, dtype=torch.bfloat16)
    if "gather" in only:
        bench_gather(rows, args.device, args.reps, roof)
    if "attention" in only:
        bench_attention(rows, args.device, args.reps, roof)
    if args.device == "cuda":
        env["measured_choices"] = sk.measured_choices()
    if not args.no_save:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        tag = "".join(c if c.isalnum() else "-" for c in env["device"]).strip("-").lower()
        path = out / f"kernels-{args.device}-{tag[:40]}.json"
        path.write_text(json.dumps({"environment": env, "results": rows}, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
