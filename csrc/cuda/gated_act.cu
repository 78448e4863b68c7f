// gated_act on CUDA: y = g * act(x + b) over the last dim (fp32/fp16/bf16, float math) and
// its backward. The backward writes dx and per-(row chunk, unit) partial sums of dgate and
// dbias from a block-level tree reduction; the partials are summed by ATen afterwards, so
// results are deterministic (no float atomics).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../alloc.h"
#include "../ops.h"
#include "act.cuh"

namespace subnet {
namespace {

constexpr int kCols = 32;   // units per block (one warp wide: coalesced rows)
constexpr int kRows = 8;    // row lanes per block in the backward

template <typename T>
__global__ void gated_act_fwd_kernel(const T* __restrict__ x, const float* __restrict__ b,
                                     const float* __restrict__ g, T* __restrict__ y, int64_t total,
                                     int64_t n, int act) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = i % n;
    float z = static_cast<float>(x[i]);
    if (b != nullptr) z += b[j];
    y[i] = static_cast<T>(g[j] * cuda::act_value(z, act));
  }
}

template <typename T>
__global__ void gated_act_bwd_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                     const float* __restrict__ b, const float* __restrict__ g,
                                     T* __restrict__ dx, float* __restrict__ part_g,
                                     float* __restrict__ part_b, int64_t m, int64_t n,
                                     int64_t rows_per_chunk, int act) {
  const int64_t col = blockIdx.x * static_cast<int64_t>(kCols) + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  float acc_g = 0.f, acc_b = 0.f;
  if (col < n) {
    const float gj = g[col];
    const float bj = b != nullptr ? b[col] : 0.f;
    const int64_t end = min(m, (chunk + 1) * rows_per_chunk);
    for (int64_t r = chunk * rows_per_chunk + threadIdx.y; r < end; r += kRows) {
      const int64_t i = r * n + col;
      float a, da;
      cuda::act_value_grad(static_cast<float>(x[i]) + bj, act, a, da);
      const float d = static_cast<float>(dy[i]);
      const float dz = d * gj * da;
      dx[i] = static_cast<T>(dz);
      acc_g += d * a;
      acc_b += dz;
    }
  }
  __shared__ float sg[kRows][kCols];
  __shared__ float sb[kRows][kCols];
  sg[threadIdx.y][threadIdx.x] = acc_g;
  sb[threadIdx.y][threadIdx.x] = acc_b;
  __syncthreads();
  if (threadIdx.y == 0 && col < n) {
    float tg = 0.f, tb = 0.f;
    for (int k = 0; k < kRows; ++k) {  // fixed order: deterministic
      tg += sg[k][threadIdx.x];
      tb += sb[k][threadIdx.x];
    }
    part_g[chunk * n + col] = tg;
    part_b[chunk * n + col] = tb;
  }
}

struct Prepared {
  at::Tensor x, bias, gate;  // x contiguous in its dtype; bias/gate float32 (no rounding of
  int64_t rows, units;       // the gate to half precision)
};

Prepared prepare(const at::Tensor& x, const std::optional<at::Tensor>& bias,
                 const at::Tensor& gate, int64_t act) {
  TORCH_CHECK(act >= 0 && act <= 3, "gated_act: unknown activation code ", act);
  TORCH_CHECK(x.is_cuda() && gate.is_cuda(), "gated_act (CUDA): tensors must be on CUDA");
  TORCH_CHECK(x.dim() >= 1, "gated_act: x must have at least one dim");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kHalf ||
                  x.scalar_type() == at::kBFloat16,
              "gated_act (CUDA) computes in float32: float32/float16/bfloat16 only, got ",
              x.scalar_type());
  const int64_t n = x.size(-1);
  TORCH_CHECK(gate.dim() == 1 && gate.size(0) == n, "gated_act: gate must be (", n, ",)");
  Prepared p;
  p.x = x.contiguous();
  p.gate = gate.to(at::kFloat).contiguous();
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == n, "gated_act: bias must be (", n, ",)");
    p.bias = bias->to(at::kFloat).contiguous();
  }
  p.units = n;
  p.rows = n == 0 ? 0 : x.numel() / n;
  return p;
}

}  // namespace

at::Tensor gated_act_fwd_cuda(const at::Tensor& x, const std::optional<at::Tensor>& bias,
                              const at::Tensor& gate, int64_t act) {
  Prepared p = prepare(x, bias, gate, act);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = new_output(p.x.sizes(), p.x.options());
  const int64_t total = p.x.numel();
  if (total == 0) return y;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 65535 * 8);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.x.scalar_type(), "gated_act_fwd", [&] {
    gated_act_fwd_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
        p.x.const_data_ptr<scalar_t>(), p.bias.defined() ? p.bias.const_data_ptr<float>() : nullptr,
        p.gate.const_data_ptr<float>(), y.mutable_data_ptr<scalar_t>(), total, p.units,
        static_cast<int>(act));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_act_bwd_cuda(
    const at::Tensor& grad, const at::Tensor& x, const std::optional<at::Tensor>& bias,
    const at::Tensor& gate, int64_t act) {
  Prepared p = prepare(x, bias, gate, act);
  TORCH_CHECK(grad.sizes() == x.sizes(), "gated_act backward: grad shape mismatch");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor dy = grad.to(x.scalar_type()).contiguous();
  at::Tensor dx = new_output(p.x.sizes(), p.x.options());
  const auto bias_type = p.bias.defined() ? bias->scalar_type() : gate.scalar_type();
  if (p.rows == 0 || p.units == 0) {
    return {dx, at::zeros({p.units}, gate.options().dtype(bias_type)), at::zeros_like(gate)};
  }
  // Enough row chunks to fill the GPU, each long enough to amortise the block reduction.
  const int64_t col_blocks = (p.units + kCols - 1) / kCols;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((p.rows + 63) / 64,
                                                                 std::max<int64_t>(1, 4096 / col_blocks)));
  const int64_t rows_per_chunk = (p.rows + chunks - 1) / chunks;
  at::Tensor part = new_output({2, chunks, p.units}, p.x.options().dtype(at::kFloat));
  auto stream = c10::cuda::getCurrentCUDAStream();
  const dim3 block(kCols, kRows);
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.x.scalar_type(), "gated_act_bwd", [&] {
    gated_act_bwd_kernel<scalar_t><<<grid, block, 0, stream>>>(
        dy.const_data_ptr<scalar_t>(), p.x.const_data_ptr<scalar_t>(),
        p.bias.defined() ? p.bias.const_data_ptr<float>() : nullptr,
        p.gate.const_data_ptr<float>(), dx.mutable_data_ptr<scalar_t>(),
        part.mutable_data_ptr<float>(), part.mutable_data_ptr<float>() + chunks * p.units,
        p.rows, p.units, rows_per_chunk, static_cast<int>(act));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {dx, part[1].sum(0).to(bias_type), part[0].sum(0).to(gate.scalar_type())};
}

}  // namespace subnet
