// gather_compact on CUDA: all outputs of a plan table (subnet_kernels/plan.py) in one launch.
// Grid = (blocks per output, outputs); each block reads its output's record into shared
// memory and strides over the output's elements, decoding coordinates and kept indices.
// Sources are reached through a small device array of base addresses (CUDA can load
// pointers, unlike the Triton interpreter). Elements move as same-width integers.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "../alloc.h"
#include "../common.h"
#include "../ops.h"
#include "../table_check.h"

namespace subnet {
namespace {

using namespace table;

template <typename E>
__global__ void gather_kernel(const int64_t* __restrict__ tbl, const int64_t* __restrict__ bases,
                              E* __restrict__ out) {
  __shared__ int64_t rec[kRecord];
  if (threadIdx.x < kRecord) rec[threadIdx.x] = tbl[kHeader + blockIdx.y * kRecord + threadIdx.x];
  __syncthreads();
  const E* src = reinterpret_cast<const E*>(bases[rec[kSrcId]]);
  E* dst = out + rec[kOutOffset];
  const int64_t numel = rec[kNumel];
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < numel;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rem = e, off = 0;
    for (int d = kMaxDims - 1; d >= 0; --d) {
      const int64_t size = rec[kSizes + d];
      const int64_t c = rem % size;
      rem /= size;
      const int64_t where = rec[kIndex + d];
      off += (where < 0 ? c : __ldg(tbl + where + c)) * rec[kStrides + d];
    }
    dst[e] = src[off];
  }
}

}  // namespace

at::Tensor gather_compact_cuda(at::TensorList sources, const at::Tensor& table_t, int64_t total) {
  TORCH_CHECK(!sources.empty(), "gather_compact: no sources");
  TORCH_CHECK(table_t.scalar_type() == at::kLong && table_t.dim() == 1,
              "gather_compact: table must be a 1-D int64 tensor");
  const auto device = sources[0].device();
  const c10::cuda::CUDAGuard guard(device);
  // The table is built on the host; it is validated there, then copied to the device.
  const at::Tensor host = table_t.cpu().contiguous();
  const int64_t* h = host.const_data_ptr<int64_t>();

  std::vector<at::Tensor> srcs;
  std::vector<int64_t> bases, numels;
  for (const auto& s : sources) {
    TORCH_CHECK(s.device() == device && s.scalar_type() == sources[0].scalar_type(),
                "gather_compact: sources must share one CUDA device and dtype");
    srcs.push_back(s.contiguous());
    bases.push_back(reinterpret_cast<int64_t>(srcs.back().const_data_ptr()));
    numels.push_back(s.numel());
  }
  check_table(h, host.numel(), total, numels);
  const int64_t n_out = h[0];
  at::Tensor out = new_output({total}, sources[0].options());
  if (total == 0 || n_out == 0) return out;
  int64_t max_numel = 0;
  for (int64_t i = 0; i < n_out; ++i)
    max_numel = std::max(max_numel, h[kHeader + i * kRecord + kNumel]);
  auto opts = at::TensorOptions().dtype(at::kLong);
  at::Tensor d_table = table_t.to(device, /*non_blocking=*/false).contiguous();
  at::Tensor d_bases = at::tensor(bases, opts).to(device);

  const int threads = 256;
  const int64_t per_output = std::min<int64_t>((max_numel + threads - 1) / threads,
                                               std::max<int64_t>(1, 16384 / n_out));
  TORCH_CHECK(n_out <= 65535, "gather_compact: at most 65535 outputs per call");
  const dim3 grid(static_cast<unsigned>(std::max<int64_t>(per_output, 1)), static_cast<unsigned>(n_out));
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t* tp = d_table.const_data_ptr<int64_t>();
  const int64_t* bp = d_bases.const_data_ptr<int64_t>();
  switch (out.element_size()) {
    case 1: gather_kernel<uint8_t><<<grid, threads, 0, stream>>>(tp, bp, static_cast<uint8_t*>(out.data_ptr())); break;
    case 2: gather_kernel<uint16_t><<<grid, threads, 0, stream>>>(tp, bp, static_cast<uint16_t*>(out.data_ptr())); break;
    case 4: gather_kernel<uint32_t><<<grid, threads, 0, stream>>>(tp, bp, static_cast<uint32_t*>(out.data_ptr())); break;
    case 8: gather_kernel<uint64_t><<<grid, threads, 0, stream>>>(tp, bp, static_cast<uint64_t*>(out.data_ptr())); break;
    default: TORCH_CHECK(false, "gather_compact: unsupported element size ", out.element_size());
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace subnet
