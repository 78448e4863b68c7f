// gated_act on CUDA: y = g * act(x + b) over the last dim (fp32/fp16/bf16, float math) and
// its backward, both memory-bound, so both are built around the bytes:
// - rows x units tiling: a thread owns V consecutive units (one 16-byte vector) and walks
//   down rows, so gate/bias are loaded once per thread and the unit index needs no modulo;
//   element offsets are 32-bit within a row, 64-bit only once per row;
// - forward: one read of x, one write of y;
// - backward: recomputes act(x + b) from x (nothing extra saved), writes dx, and each block
//   reduces dgate/dbias over its rows into a (row chunk, unit) partial; a second small kernel
//   sums the chunks in a fixed order (deterministic, no float atomics).
// Rows whose length is not a multiple of V, or unaligned pointers, take the V = 1 build.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>

#include "../alloc.h"
#include "../ops.h"
#include "act.cuh"

namespace subnet {
namespace {

constexpr int kFwdThreads = 128;  // threads along the units in the forward
constexpr int kFwdRows = 4;       // rows per thread in the forward (loads in flight)
constexpr int kBwdX = 32;         // threads along the units in the backward (one warp)
constexpr int kBwdY = 8;          // row lanes in the backward

// V elements of T moved as one load/store (16 bytes when V = 16 / sizeof(T)).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ void load(const T* p, float (&out)[V]) {
  const Pack<T, V> pk = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
  for (int i = 0; i < V; ++i) out[i] = static_cast<float>(pk.v[i]);
}

template <typename T, int V>
__device__ __forceinline__ void store(T* p, const float (&in)[V]) {
  Pack<T, V> pk;
#pragma unroll
  for (int i = 0; i < V; ++i) pk.v[i] = static_cast<T>(in[i]);
  *reinterpret_cast<Pack<T, V>*>(p) = pk;
}

template <int V>
__device__ __forceinline__ void load_params(const float* b, const float* g, int col, float (&bv)[V],
                                            float (&gv)[V]) {
#pragma unroll
  for (int i = 0; i < V; ++i) {
    gv[i] = g[col + i];
    bv[i] = b != nullptr ? b[col + i] : 0.f;
  }
}

// grid (row blocks, unit blocks); a thread: units [col, col + V) of kFwdRows rows.
template <typename T, int V>
__global__ void __launch_bounds__(kFwdThreads) fwd_kernel(
    const T* __restrict__ x, const float* __restrict__ b, const float* __restrict__ g,
    T* __restrict__ y, int64_t rows, int n, int act) {
  const int col = (blockIdx.y * kFwdThreads + threadIdx.x) * V;
  if (col >= n) return;
  float bv[V], gv[V];
  load_params<V>(b, g, col, bv, gv);
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kFwdRows;
  float z[kFwdRows][V];
#pragma unroll
  for (int k = 0; k < kFwdRows; ++k)  // all loads first: kFwdRows requests in flight
    if (r0 + k < rows) load<T, V>(x + (r0 + k) * n + col, z[k]);
#pragma unroll
  for (int k = 0; k < kFwdRows; ++k) {
    if (r0 + k >= rows) break;
    float out[V];
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = gv[i] * cuda::act_value(z[k][i] + bv[i], act);
    store<T, V>(y + (r0 + k) * n + col, out);
  }
}

// grid (unit blocks of kBwdX * V units, row chunks), block (kBwdX, kBwdY).
template <typename T, int V>
__global__ void __launch_bounds__(kBwdX * kBwdY) bwd_kernel(
    const T* __restrict__ dy, const T* __restrict__ x, const float* __restrict__ b,
    const float* __restrict__ g, T* __restrict__ dx, float* __restrict__ part_g,
    float* __restrict__ part_b, int64_t rows, int n, int64_t rows_per_chunk, int act) {
  const int col = (blockIdx.x * kBwdX + threadIdx.x) * V;
  const bool active = col < n;
  float acc_g[V] = {}, acc_b[V] = {};
  if (active) {
    float bv[V], gv[V];
    load_params<V>(b, g, col, bv, gv);
    const int64_t first = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
    const int64_t end = min(rows, first + rows_per_chunk);
#pragma unroll 2
    for (int64_t r = first + threadIdx.y; r < end; r += kBwdY) {
      float xv[V], dv[V], out[V];
      load<T, V>(x + r * n + col, xv);
      load<T, V>(dy + r * n + col, dv);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        float a, da;
        cuda::act_value_grad(xv[i] + bv[i], act, a, da);
        out[i] = dv[i] * gv[i] * da;
        acc_g[i] += dv[i] * a;
        acc_b[i] += out[i];
      }
      store<T, V>(dx + r * n + col, out);
    }
  }
  // Sum the kBwdY row lanes of each unit in a fixed order.
  __shared__ float sg[kBwdY][kBwdX * V];
  __shared__ float sb[kBwdY][kBwdX * V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    sg[threadIdx.y][threadIdx.x * V + i] = acc_g[i];
    sb[threadIdx.y][threadIdx.x * V + i] = acc_b[i];
  }
  __syncthreads();
  const int base = blockIdx.x * kBwdX * V;
  for (int u = threadIdx.y * kBwdX + threadIdx.x; u < kBwdX * V; u += kBwdX * kBwdY) {
    if (base + u >= n) continue;
    float tg = 0.f, tb = 0.f;
#pragma unroll
    for (int k = 0; k < kBwdY; ++k) {
      tg += sg[k][u];
      tb += sb[k][u];
    }
    part_g[blockIdx.y * static_cast<int64_t>(n) + base + u] = tg;
    part_b[blockIdx.y * static_cast<int64_t>(n) + base + u] = tb;
  }
}

// The second pass: out[u] = sum over chunks of part[chunk, u] (both partials), in order.
__global__ void sum_chunks_kernel(const float* __restrict__ part_g, const float* __restrict__ part_b,
                                  float* __restrict__ dg, float* __restrict__ db, int64_t chunks,
                                  int n) {
  const int u = blockIdx.x * blockDim.x + threadIdx.x;
  if (u >= n) return;
  float tg = 0.f, tb = 0.f;
  for (int64_t c = 0; c < chunks; ++c) {
    tg += part_g[c * n + u];
    tb += part_b[c * n + u];
  }
  dg[u] = tg;
  db[u] = tb;
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
  TORCH_CHECK(n < (int64_t{1} << 30), "gated_act (CUDA): at most 2^30 units");
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

// The 16-byte build needs whole vectors per row and 16-byte aligned row starts.
bool vectorisable(int64_t n, int vec, std::initializer_list<const at::Tensor*> ts) {
  if (n % vec != 0) return false;
  for (const at::Tensor* t : ts)
    if (reinterpret_cast<uintptr_t>(t->const_data_ptr()) % 16 != 0) return false;
  return true;
}

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

int multiprocessors(int device) {
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

// The dtypes the kernels take (prepare() rejects the others).
#define SUBNET_DISPATCH_HALF_OR_FLOAT(type, name, ...)                 \
  AT_DISPATCH_SWITCH(type, name, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                     AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__)              \
                     AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

}  // namespace

at::Tensor gated_act_fwd_cuda(const at::Tensor& x, const std::optional<at::Tensor>& bias,
                              const at::Tensor& gate, int64_t act) {
  Prepared p = prepare(x, bias, gate, act);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = new_output(p.x.sizes(), p.x.options());
  if (p.x.numel() == 0) return y;
  auto stream = c10::cuda::getCurrentCUDAStream();
  const float* b = p.bias.defined() ? p.bias.const_data_ptr<float>() : nullptr;
  SUBNET_DISPATCH_HALF_OR_FLOAT(p.x.scalar_type(), "gated_act_fwd", [&] {
    constexpr int V = 16 / sizeof(scalar_t);
    const int vec = vectorisable(p.units, V, {&p.x, &y}) ? V : 1;
    const int64_t unit_blocks = cdiv(cdiv(p.units, vec), kFwdThreads);
    TORCH_CHECK(unit_blocks <= 65535, "gated_act (CUDA): too many units");
    const dim3 grid(static_cast<unsigned>(cdiv(p.rows, kFwdRows)), static_cast<unsigned>(unit_blocks));
    auto kernel = vec == 1 ? fwd_kernel<scalar_t, 1> : fwd_kernel<scalar_t, V>;
    kernel<<<grid, kFwdThreads, 0, stream>>>(
        p.x.const_data_ptr<scalar_t>(), b, p.gate.const_data_ptr<float>(),
        y.mutable_data_ptr<scalar_t>(), p.rows, static_cast<int>(p.units), static_cast<int>(act));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
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
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int sms = multiprocessors(x.get_device());
  const float* b = p.bias.defined() ? p.bias.const_data_ptr<float>() : nullptr;
  // Two tensors, not two views of one: the op's outputs must not alias each other.
  at::Tensor dg = at::empty({p.units}, p.x.options().dtype(at::kFloat));
  at::Tensor db = at::empty({p.units}, p.x.options().dtype(at::kFloat));
  SUBNET_DISPATCH_HALF_OR_FLOAT(p.x.scalar_type(), "gated_act_bwd", [&] {
    constexpr int V = 16 / sizeof(scalar_t);
    const int vec = (V > 1 && vectorisable(p.units, V, {&p.x, &dy, &dx})) ? V : 1;
    // Enough row chunks for ~8 blocks per SM, each at least 64 rows long (to amortise its
    // reduction) and at most 65535 chunks (grid y).
    const int64_t unit_blocks = cdiv(p.units, int64_t{kBwdX} * vec);
    const int64_t want = std::max<int64_t>(1, cdiv(int64_t{8} * sms, unit_blocks));
    const int64_t chunks = std::min<int64_t>({want, cdiv(p.rows, 64), 65535});
    const int64_t rows_per_chunk = cdiv(p.rows, chunks);
    const int64_t used = cdiv(p.rows, rows_per_chunk);
    at::Tensor part = new_output({2, used, p.units}, p.x.options().dtype(at::kFloat));
    float* pg = part.mutable_data_ptr<float>();
    const dim3 grid(static_cast<unsigned>(unit_blocks), static_cast<unsigned>(used));
    const dim3 block(kBwdX, kBwdY);
    auto kernel = vec == 1 ? bwd_kernel<scalar_t, 1> : bwd_kernel<scalar_t, V>;
    kernel<<<grid, block, 0, stream>>>(
        dy.const_data_ptr<scalar_t>(), p.x.const_data_ptr<scalar_t>(), b,
        p.gate.const_data_ptr<float>(), dx.mutable_data_ptr<scalar_t>(), pg, pg + used * p.units,
        p.rows, static_cast<int>(p.units), rows_per_chunk, static_cast<int>(act));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    sum_chunks_kernel<<<cdiv(p.units, 256), 256, 0, stream>>>(
        pg, pg + used * p.units, dg.mutable_data_ptr<float>(), db.mutable_data_ptr<float>(), used,
        static_cast<int>(p.units));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dx, db.to(bias_type), dg.to(gate.scalar_type())};
}

}  // namespace subnet
