#!/usr/bin/env bash
# Everything that needs a CUDA machine, in one go, in under 8 minutes on one GPU:
#   1. build the CUDA extension in place (setup.py build_ext --inplace, FORCE_CUDA=1)
#   2. the kernel tests on the GPU against float64 references (tests/kernels: the CUDA
#      extension's and the measured backend choice's, marked `gpu`, and the Triton kernels',
#      which run compiled on cuda when there is a GPU), with Triton autotuning off
#      (SUBNET_TRITON_AUTOTUNE=0): the tests run every autotune configuration explicitly
#   3. benchmarks/bench_kernels.py --device cuda: every kernel against PyTorch, with its
#      roofline (GB/s and TFLOP/s against the copy bandwidth and bf16 matmul peak measured
#      in the same run) and the backend subnet_kernels.select measures fastest
#   4. `subnet bench` compact vs dense: random-init whisper-base-shaped encoders at 50% and
#      25% kept, batch 1 and 32, bf16, 30 s clips
#   5. benchmarks/run.py --device cuda: mask-training step of whisper-base, batch 32 x 10 s and 30 s, bf16,
#      all units alive vs half frozen vs the paper's hooks + eager attention vs all alive under
#      torch.compile(mode="reduce-overhead") (`subnet extract --compile reduce-overhead`: CUDA graphs)
#   6. tests/test_extract.py -k on_device: a tiny extraction trained on the GPU in bf16
#   7. `subnet bench --compile reduce-overhead` (CUDA graphs) of the 25% artifact, batch 1
# Everything lands in $RESULTS (default benchmarks/results/), named after the device: gpu-<device>-*.log|json|xml
# and bench_kernels.py's kernels-cuda-<device>.json. Each step has its own time limit and all
# of them end by 8 minutes; a failed step is reported and the others still run; the exit
# status is the number of failed steps.
#
#   bash benchmarks/gpu.sh                        # on the GPU machine
#   STEPS="build training-step" bash benchmarks/gpu.sh   # only these steps (names as in the logs)
#   DEVICE=cpu SMALL=1 bash benchmarks/gpu.sh     # the same steps on a CPU: tiny shapes, no build
#
# The GPU machines have no network: the build uses the installed torch, setuptools and ninja.
# PYTHON picks the interpreter (default: python3).
set -uo pipefail
cd "$(dirname "$0")/.."
export ROOT=$PWD PY=${PYTHON:-python3} DEVICE=${DEVICE:-cuda} SMALL=${SMALL:-0}
export RESULTS=${RESULTS:-$ROOT/benchmarks/results}  # RESULTS=DIR: elsewhere (tests)
export PYTHONPATH="$ROOT/python:$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # works even if the install fails
export PYTHONUNBUFFERED=1
BUDGET_S=470  # every step ends by then (8 minutes, less the bookkeeping)
mkdir -p "$RESULTS"
start=$SECONDS
failed=0

# the device tag, by bench_kernels.py's rule: alphanumerics kept, the rest '-', lower case
TAG=$("$PY" - <<'EOF'
import os, platform, sys, torch
if os.environ["DEVICE"].startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit("gpu.sh: torch sees no CUDA device (DEVICE=cpu SMALL=1 runs the steps on a CPU)")
    name = torch.cuda.get_device_name()
else:
    name = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
                platform.processor() or platform.machine())
print("".join(c if c.isalnum() else "-" for c in name).strip("-").lower()[:40])
EOF
) || exit 1
export PREFIX=$RESULTS/gpu-$DEVICE-$TAG
echo "device: $DEVICE ($TAG); results: $PREFIX-*"

# step NAME LIMIT_S CMD...: CMD under a time limit (capped by the budget), output to PREFIX-NAME.log
step() {
    local name=$1 limit=$2 left=$((BUDGET_S - (SECONDS - start)))
    shift 2
    if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then return 0; fi
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -lt 10 ]; then
        echo "!!! $name skipped: the 8-minute budget is spent"; failed=$((failed + 1)); return 0
    fi
    echo "=== [$((SECONDS - start)) s] $name (limit $limit s)"
    timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$PREFIX-$name.log"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq 124 ] && echo "!!! $name stopped at its time limit" || echo "!!! $name failed (exit $rc)"
        failed=$((failed + 1))
    fi
    return 0
}

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: ${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"  # COMMIT= where the tree has no .git
    "$PY" -c 'import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
    # the extension is built with $CXX (or c++); torch's own build compiler, for comparison
    echo "CC=${CC:-} CXX=${CXX:-}: $(${CXX:-c++} --version 2>/dev/null | head -1)"
    "$PY" -c 'import torch; print(*[l.strip() for l in torch.__config__.show().splitlines() if "ompiler" in l][:2])'
} > "$PREFIX-environment.txt"
cat "$PREFIX-environment.txt"

# 1. build: FORCE_CUDA=1 compiles csrc/cuda even where torch cannot see the toolkit by itself.
# In place, like the CPU build of this checkout: the steps import subnet and subnet_kernels from the tree
# (PYTHONPATH), and an editable pip install may put the extension elsewhere. INSTALL=1 also
# runs `pip install --no-build-isolation -e .` afterwards, for the `subnet` command.
build() {
    export FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-16}
    "$PY" setup.py -q build_ext --inplace || return 1
    if [ "${INSTALL:-0}" = 1 ]; then
        "$PY" -m pip install --no-build-isolation --no-deps --no-index -e . || return 1
    fi
    "$PY" - <<'EOF2'
import torch, subnet_kernels._C  # noqa: F401
ok = torch._C._dispatch_has_kernel_for_dispatch_key("subnet_kernels::_gated_act_fwd", "CUDA")
print(subnet_kernels._C.__file__, "has CUDA kernels:", ok)
raise SystemExit(0 if ok else 1)
EOF2
}

# 4. artifacts of a random-init whisper-base-shaped encoder (50% and 25% of every group kept)
make_artifacts() {
    "$PY" - "$1" <<'EOF'
import os, sys
import torch
import transformers
from transformers.models.whisper.modeling_whisper import WhisperEncoder
import subnet

out = sys.argv[1]
shape = (dict(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, num_mel_bins=16,
              max_source_positions=50) if os.environ["SMALL"] == "1" else
         dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048, num_mel_bins=80,
              max_source_positions=1500))  # whisper-base, 30 s window
for kept in (0.5, 0.25):
    torch.manual_seed(0)
    enc = WhisperEncoder(transformers.WhisperConfig(**shape)).eval()
    mm = subnet.attach_masks(enc)
    gen = torch.Generator().manual_seed(1)
    keep = {}
    for name, g in mm.groups.items():
        m = torch.zeros(g.size, dtype=torch.bool)
        m[torch.randperm(g.size, generator=gen)[:max(1, round(kept * g.size))]] = True
        keep[name] = m
    small = subnet.compact(mm, keep)
    path = subnet.save(small, f"{out}/whisper-base-{round(kept * 100)}")
    print(f"{path}: {sum(p.numel() for p in enc.parameters()):,} -> "
          f"{sum(p.numel() for p in small.parameters()):,} parameters")
EOF
}

bench() {
    local cmd=("$PY" -m subnet.cli) seconds=30 batches=1,32 dtype=bf16 rc=0 art
    # `subnet bench` once cli.py has it, else the same command from its module
    "$PY" -m subnet.cli bench --help > /dev/null 2>&1 || cmd=("$PY" -m subnet.benchcli)
    if [ "$SMALL" = 1 ]; then
        seconds=1 batches=1,4
        [ "$DEVICE" = cuda ] || dtype=fp32
    fi
    art=$(mktemp -d) || return 1
    make_artifacts "$art" || { rm -rf "$art"; return 1; }
    for kept in 50 25; do
        "${cmd[@]}" bench "$art/whisper-base-$kept" --device "$DEVICE" --batch "$batches" \
            --seconds "$seconds" --dtype "$dtype" --repeats 20 --warmup 5 \
            --json "$PREFIX-subnet-bench-whisper-base-$kept.json" || rc=1
    done
    rm -rf "$art"
    return $rc
}
bench_graphs() {  # 25% kept, batch 1 (where launch overhead matters most), compiled with CUDA graphs
    local seconds=30 dtype=bf16 art rc=0
    [ "$SMALL" = 1 ] && seconds=1 && { [ "$DEVICE" = cuda ] || dtype=fp32; }
    art=$(mktemp -d) || return 1
    make_artifacts "$art" || { rm -rf "$art"; return 1; }
    "$PY" -m subnet.benchcli bench "$art/whisper-base-25" --device "$DEVICE" --batch 1 --seconds "$seconds" \
        --dtype "$dtype" --repeats 20 --warmup 5 --compile reduce-overhead --no-memory \
        --json "$PREFIX-subnet-bench-whisper-base-25-graphs.json" || rc=1
    rm -rf "$art"
    return $rc
}
export -f build make_artifacts bench bench_graphs

if [ "$DEVICE" = cuda ]; then
    step build 200 bash -c build
    tests="not slow"
else  # no build; the Triton interpreter tests are too slow for this check on a CPU
    echo "=== build skipped on $DEVICE (the extension already built is used)"
    tests="not slow and not interpreter"
fi

# 2. kernel tests (-rs lists why any were skipped, e.g. no CUDA build of the extension). With
# pytest-xdist, in 8 workers: a test that crashes its process is reported and the others still run.
workers=()
"$PY" -c "import xdist" 2>/dev/null && workers=(-n 8)
step kernel-tests 150 env SUBNET_TRITON_AUTOTUNE=0 "$PY" -m pytest -q -p no:cacheprovider -rs --durations=10 \
    "${workers[@]}" tests/kernels -m "$tests" --junitxml="$PREFIX-kernel-tests.xml"

# 3. kernel benchmarks; bench_kernels.py writes $RESULTS/kernels-<device>-<tag>.json
if [ "$SMALL" = 1 ]; then
    step bench-kernels 100 "$PY" benchmarks/bench_kernels.py --device "$DEVICE" --reps 2 --only gated_act --no-save
else
    step bench-kernels 150 "$PY" benchmarks/bench_kernels.py --device "$DEVICE" --reps 11 --out "$RESULTS"
fi

# 4. compact vs dense
step subnet-bench 110 bash -c bench

# 5. the mask-training step, bf16: all alive vs half frozen vs paper-style (hooks, eager attention)
if [ "$DEVICE" = cuda ]; then
    step training-step 150 "$PY" benchmarks/run.py --device cuda --repeats 7 --out "$RESULTS"
else
    step training-step 60 "$PY" benchmarks/run.py --quick --repeats 1 --only frozen_step --out "$(mktemp -d)" \
        --doc /dev/null
fi

# 6. a whole (tiny) extraction on the device: training, compaction, artifact, CPU reload
step extract-on-device 40 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_extract.py -k on_device \
    --junitxml="$PREFIX-extract-on-device.xml"

# 7. (last: it gets what time is left) compact vs dense under torch.compile(mode="reduce-overhead"):
# fused elementwise work, CUDA graphs replayed
step subnet-bench-graphs 90 bash -c bench_graphs

# results name no paths of this machine: the checkout, site-packages, venvs, temp dirs, the
# toolkit and the compilers become placeholders (the environment file keeps the facts)
scrub() {
    local f
    for f in "$@"; do
        [[ -f "$f" && "$f" != *-environment*.txt ]] || continue
        sed -i -E -e "s#$ROOT/##g" -e 's#/[^ '"'"'"()]*/site-packages/#<site-packages>/#g' \
            -e 's#/[^ '"'"'"()]*/\.venv/#<venv>/#g' -e 's#/tmp/[^ /'"'"'"]*/#<tmp>/#g' \
            -e "s#${CUDA_HOME:-/usr/local/cuda}#\$CUDA_HOME#g" -e 's#/usr/include/#<system-include>/#g' \
            ${CC:+-e "s#$CC#\$CC#g"} ${CXX:+-e "s#$CXX#\$CXX#g"} "$f"
    done
}
scrub "$PREFIX"-* "$RESULTS"/kernels-"$DEVICE"-*

echo "=== done in $((SECONDS - start)) s; $failed step(s) failed; results:"
ls -1 "$PREFIX"-* "$RESULTS"/kernels-"$DEVICE"-* 2>/dev/null
exit "$failed"
