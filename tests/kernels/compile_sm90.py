"""Compiles every Triton kernel of subnet_kernels, in every autotune configuration, for
Hopper (sm_90) ahead of time: no GPU needed, only Triton's CUDA backend (ptxas). Prints one
JSON line per kernel and configuration: shared memory, registers and spilled bytes (from
the cubin, when Triton ships cuobjdump) and whether 16-byte global loads/stores appear.

Run in its own process (tests/kernels/test_kernel_compile.py does): the kernels must be
imported compiled, not for the interpreter.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from subnet_kernels.triton import gated_act as A, gated_attention as T, gather_compact as G  # noqa: E402

CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def compile_sm90(fn, types, constexprs, aligned, cfg):
    """`types`: argument -> Triton type; `aligned`: the arguments Triton would see as
    16-divisible at run time (pointers of fresh tensors, sizes like 64 or 3072)."""
    names = fn.arg_names
    sig = {n: ("constexpr" if n in constexprs else types[n]) for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned if n in names}
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in constexprs.items()},
                    attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})


def resources(kernel):
    if not CUOBJDUMP.exists():
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
    try:
        out = subprocess.run([str(CUOBJDUMP), "--dump-resource-usage", f.name], capture_output=True,
                             text=True).stdout
    finally:
        os.unlink(f.name)
    m = re.search(r"REG:(\d+).*?STACK:(\d+)", out)
    return {"registers": int(m.group(1)), "stack": int(m.group(2))} if m else {}


def report(name, cfg, kernel):
    ptx = kernel.asm["ptx"]
    print(json.dumps({"kernel": name, "config": {**cfg.kwargs, "num_warps": cfg.num_warps,
                                                 "num_stages": cfg.num_stages},
                      "shared": kernel.metadata.shared, **resources(kernel),
                      "vector_load": bool(re.search(r"ld\.global(\.nc)?\.v4", ptx)),
                      "vector_store": "st.global.v4" in ptx}), flush=True)


def main():
    act_types = dict(X="*{t}", B="*{t}", G="*fp32", Y="*{t}", DY="*{t}", DX="*{t}", PART="*fp32",
                     M="i32", N="i32", ROWS_PER_CHUNK="i32")
    aligned = ("X", "B", "G", "Y", "DY", "DX", "PART", "N")
    for dtype in ("fp32", "bf16"):
        types = {k: v.format(t=dtype) for k, v in act_types.items()}
        for tuned, fn in ((A.FWD, A._fwd_kernel), (A.BWD, A._bwd_kernel)):
            for cfg in tuned.configs:
                k = compile_sm90(fn, types, dict(HAS_BIAS=True, ACT=0, I64=False, **cfg.kwargs), aligned, cfg)
                report(f"gated_act.{fn.__name__}.{dtype}", cfg, k)
    attn = dict(G="*fp32", ORDER="*i32", KPM="*u8", LSE="*fp32", DELTA="*fp32", qk_scale="fp32", scale="fp32",
                **{n: "i32" for n in ("sqb", "sqh", "sqt", "skb", "skh", "skt", "svb", "svh", "svt",
                                      "B", "H", "TQ", "TK", "D")})
    for (name, block_d, half), cfgs in T._CONFIGS.items():
        dtype = "bf16" if half else "fp32"
        types = {**attn, **{n: f"*{dtype}" for n in ("Q", "K", "V", "Y", "O", "DY", "DK", "DV", "DQ")}}
        for cfg in cfgs:
            consts = dict(HAS_MASK=True, IEEE=not half, BLOCK_D=block_d, **cfg.kwargs)
            if name == "fwd":
                consts["DEAD_O"] = False
            k = compile_sm90(T._KERNELS[name], types, consts,
                             ("Q", "K", "V", "Y", "O", "DY", "DK", "DV", "DQ", "G", "LSE", "DELTA", "D",
                              "sqt", "skt", "svt"), cfg)
            report(f"gated_attention.{name}.d{block_d}.{dtype}", cfg, k)
    gather = dict(SOURCES="*i64", N_SOURCES="i32", TASKS="*i64", OFFS="*i64", N_OFFS="i64", TOTAL="i64")
    for out, vec in (("*i32", 4), ("*i16", 8)):
        cfg = triton.Config({}, num_warps=4, num_stages=3)
        k = compile_sm90(G._gather_kernel, {**gather, "OUT": out},
                         dict(ALIGNED=True, V=vec, BLOCK=1024, BLOCK_R=4, BLOCK_C=256),
                         ("SOURCES", "TASKS", "OFFS", "OUT"), cfg)
        report(f"gather_compact.{out[1:]}", cfg, k)


if __name__ == "__main__":
    main()
