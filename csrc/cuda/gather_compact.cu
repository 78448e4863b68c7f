// gather_compact on CUDA: runs a copy program (subnet_kernels/plan.py, CopyProgram), i.e. the
// gather table compiled once per plan on the host into tasks of at most 32 KB each, cached
// on the device with the plan. One thread block per task:
// - SPAN: a contiguous run, moved as 16-byte vectors between a scalar head and tail (any
//   relative alignment of source and destination a multiple of 16 bytes; else element-wise);
// - ROWS / GATHER: rows of contiguous / gathered columns, consecutive threads on consecutive
//   columns (coalesced), 16-byte vectors where the host marked the task VEC and the pointers
//   are aligned. Elements move as same-width integers, so any dtype works.
// Source pointers and sizes travel by value in the kernel parameters (no per-call transfer),
// and every task and source offset is bounds-checked on the device: whatever the program
// says, nothing is read outside a source or written outside the output.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "../alloc.h"
#include "../ops.h"

namespace subnet {
namespace {

// The task layout of plan.py.
constexpr int kTask = 8;
constexpr int kKind = 0, kSrc = 1, kSrcOff = 2, kDst = 3, kRows = 4, kCols = 5, kRowsAt = 6,
              kColsAt = 7;
constexpr int64_t kSpan = 0, kGather = 2, kVec = 4;

constexpr int kThreads = 256;
constexpr int kUnroll = 4;          // loads in flight per thread
constexpr int kMaxSources = 1024;   // 16 KB of parameters (CUDA >= 12.1 allows 32 KB)

struct Sources {
  const char* ptr[kMaxSources];
  int64_t numel[kMaxSources];
};

__device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}

// d[0, n) = s[0, n), by the whole block: W-sized words between scalar head and tail when
// s and d are equally misaligned, else element by element.
template <typename E>
__device__ void copy_span(const E* __restrict__ s, E* __restrict__ d, int n) {
  constexpr int V = 16 / sizeof(E);
  int done = 0;
  if (((reinterpret_cast<uintptr_t>(s) ^ reinterpret_cast<uintptr_t>(d)) & 15) == 0) {
    const int head = min(n, static_cast<int>(((16 - (reinterpret_cast<uintptr_t>(d) & 15)) & 15) / sizeof(E)));
    if (threadIdx.x < head) d[threadIdx.x] = s[threadIdx.x];
    const int words = (n - head) / V;
    const uint4* sv = reinterpret_cast<const uint4*>(s + head);
    uint4* dv = reinterpret_cast<uint4*>(d + head);
    for (int i = threadIdx.x; i < words; i += kThreads * kUnroll) {
      uint4 w[kUnroll];
#pragma unroll
      for (int k = 0; k < kUnroll; ++k)
        if (i + k * kThreads < words) w[k] = __ldg(sv + i + k * kThreads);
#pragma unroll
      for (int k = 0; k < kUnroll; ++k)
        if (i + k * kThreads < words) dv[i + k * kThreads] = w[k];
    }
    done = head + words * V;
  }
  for (int i = done + threadIdx.x; i < n; i += kThreads) d[i] = s[i];
}

// Rows of a ROWS / GATHER task, W = E (element-wise) or uint4 (VEC): word i of the task is
// row i / per_row; consecutive threads take consecutive words of a row.
template <typename E, typename W>
__device__ void copy_rows(const E* __restrict__ s, int64_t numel, E* __restrict__ d,
                          const int64_t* __restrict__ rows, const int64_t* __restrict__ cols,
                          int64_t src_off, int nrows, int ncols) {
  constexpr int V = sizeof(W) / sizeof(E);
  const int per_row = ncols / V;
  const int words = nrows * per_row;
  for (int i = threadIdx.x; i < words; i += kThreads * kUnroll) {
    W w[kUnroll];
    int at[kUnroll];
    bool ok[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int j = i + k * kThreads;
      const int r = j / per_row;
      const int c = (j - r * per_row) * V;
      at[k] = r * ncols + c;
      const int64_t off = j < words ? src_off + __ldg(rows + r) + (cols ? __ldg(cols + c) : c) : -1;
      // false past the task's end, outside the source, or (16-byte words) off a word boundary
      ok[k] = off >= 0 && off + V <= numel && off % V == 0;
      if (ok[k]) w[k] = *reinterpret_cast<const W*>(s + off);
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k)
      if (ok[k]) *reinterpret_cast<W*>(d + at[k]) = w[k];
  }
}

template <typename E>
__global__ void __launch_bounds__(kThreads) gather_kernel(
    const __grid_constant__ Sources src, int n_sources, const int64_t* __restrict__ tasks,
    const int64_t* __restrict__ offsets, int64_t n_offsets, E* __restrict__ out, int64_t total) {
  const int64_t* t = tasks + static_cast<int64_t>(blockIdx.x) * kTask;
  const int64_t kind = t[kKind], sid = t[kSrc], src_off = t[kSrcOff], dst = t[kDst];
  const int64_t nrows = t[kRows], ncols = t[kCols], rows_at = t[kRowsAt], cols_at = t[kColsAt];
  // A task the host could not have built: out of range anywhere, so skipped.
  if (sid < 0 || sid >= n_sources || nrows < 0 || ncols < 0 || nrows * ncols > (1 << 30) ||
      dst < 0 || dst + nrows * ncols > total)
    return;
  const E* s = reinterpret_cast<const E*>(src.ptr[sid]);
  const int64_t numel = src.numel[sid];
  if ((kind & 3) == kSpan) {
    if (nrows == 1 && src_off >= 0 && src_off + ncols <= numel)
      copy_span<E>(s + src_off, out + dst, static_cast<int>(ncols));
    return;
  }
  const bool gather = (kind & 3) == kGather;
  if (rows_at < 0 || rows_at + nrows > n_offsets ||
      (gather && (cols_at < 0 || cols_at + ncols > n_offsets)))
    return;
  const int64_t* rows = offsets + rows_at;
  const int64_t* cols = gather ? offsets + cols_at : nullptr;
  constexpr int V = 16 / sizeof(E);
  if ((kind & kVec) && ncols % V == 0 && aligned16(s) && aligned16(out) && (src_off % V) == 0 &&
      (dst % V) == 0)
    copy_rows<E, uint4>(s, numel, out + dst, rows, cols, src_off, static_cast<int>(nrows),
                        static_cast<int>(ncols));
  else
    copy_rows<E, E>(s, numel, out + dst, rows, cols, src_off, static_cast<int>(nrows),
                    static_cast<int>(ncols));
}

}  // namespace

at::Tensor gather_compact_run_cuda(at::TensorList sources, const at::Tensor& tasks,
                                   const at::Tensor& offsets, int64_t total) {
  TORCH_CHECK(!sources.empty(), "gather_compact: no sources");
  TORCH_CHECK(static_cast<int64_t>(sources.size()) <= kMaxSources, "gather_compact (CUDA): at most ",
              kMaxSources, " sources per call, got ", sources.size());
  const auto device = sources[0].device();
  TORCH_CHECK(tasks.scalar_type() == at::kLong && tasks.dim() == 2 && tasks.size(1) == kTask &&
                  tasks.device() == device,
              "gather_compact: tasks must be an (n, ", kTask, ") int64 tensor on the sources' device");
  TORCH_CHECK(offsets.scalar_type() == at::kLong && offsets.dim() == 1 && offsets.device() == device,
              "gather_compact: offsets must be a 1-D int64 tensor on the sources' device");
  TORCH_CHECK(tasks.size(0) < (int64_t{1} << 31), "gather_compact: too many tasks");
  const c10::cuda::CUDAGuard guard(device);
  Sources src{};
  std::vector<at::Tensor> keep;  // contiguous copies, alive until the launch is queued
  for (size_t i = 0; i < sources.size(); ++i) {
    const at::Tensor& s = sources[i];
    TORCH_CHECK(s.device() == device && s.scalar_type() == sources[0].scalar_type(),
                "gather_compact: sources must share one CUDA device and dtype");
    keep.push_back(s.contiguous());
    src.ptr[i] = static_cast<const char*>(keep.back().const_data_ptr());
    src.numel[i] = s.numel();
  }
  at::Tensor out = new_output({total}, sources[0].options());
  const int64_t n_tasks = tasks.size(0);
  if (total == 0 || n_tasks == 0) return out;
  const at::Tensor t = tasks.contiguous(), o = offsets.contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int n = static_cast<int>(sources.size());
  auto launch = [&](auto* typed_out) {
    using E = std::remove_pointer_t<decltype(typed_out)>;
    gather_kernel<E><<<static_cast<unsigned>(n_tasks), kThreads, 0, stream>>>(
        src, n, t.const_data_ptr<int64_t>(), o.const_data_ptr<int64_t>(), o.numel(), typed_out, total);
  };
  switch (out.element_size()) {
    case 1: launch(static_cast<uint8_t*>(out.data_ptr())); break;
    case 2: launch(static_cast<uint16_t*>(out.data_ptr())); break;
    case 4: launch(static_cast<uint32_t*>(out.data_ptr())); break;
    case 8: launch(static_cast<uint64_t*>(out.data_ptr())); break;
    default: TORCH_CHECK(false, "gather_compact: unsupported element size ", out.element_size());
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace subnet
