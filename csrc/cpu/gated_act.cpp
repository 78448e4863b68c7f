// gated_act on the CPU: y = g * act(x + b) over the last dim, and its backward
// (dx, dbias, dgate in one pass over x and dy, recomputing act). Tensor checks and the
// choice between the portable, AVX2 and AVX-512 builds of gated_act_kernel.h live here.
// SUBNET_CPU_CAPABILITY=portable|avx2 in the environment caps the choice (for tests).
#define SUBNET_CAP portable
#include "gated_act_kernel.h"

#include <ATen/ATen.h>

#include <cstdlib>
#include <cstring>

#include "../alloc.h"
#include "../ops.h"

namespace subnet {

// Per-capability builds of gated_act_kernel.h (gated_act_avx2.cpp, gated_act_avx512.cpp).
#define SUBNET_DECLARE_KERNELS(ns)                                                            \
  namespace ns {                                                                              \
  void fwd_f32(const float*, const float*, const float*, float*, int64_t, int64_t, Act);      \
  void fwd_f64(const double*, const double*, const double*, double*, int64_t, int64_t, Act);  \
  void bwd_f32(const float*, const float*, const float*, const float*, float*, float*, float*, \
               int64_t, int64_t, Act);                                                        \
  void bwd_f64(const double*, const double*, const double*, const double*, double*, double*,  \
               double*, int64_t, int64_t, Act);                                               \
  }

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#ifndef SUBNET_NO_AVX2
#define SUBNET_HAS_AVX2 1
SUBNET_DECLARE_KERNELS(avx2)
#endif
#ifndef SUBNET_NO_AVX512
#define SUBNET_HAS_AVX512 1
SUBNET_DECLARE_KERNELS(avx512)
#endif
#endif

namespace {

enum class Cap { Portable, Avx2, Avx512 };

Cap capability() {
  static const Cap best = [] {
#ifdef SUBNET_HAS_AVX512
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
      return Cap::Avx512;
#endif
#ifdef SUBNET_HAS_AVX2
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Cap::Avx2;
#endif
    return Cap::Portable;
  }();
  const char* cap = std::getenv("SUBNET_CPU_CAPABILITY");
  if (cap != nullptr && std::strcmp(cap, "portable") == 0) return Cap::Portable;
  if (cap != nullptr && std::strcmp(cap, "avx2") == 0 && best == Cap::Avx512) return Cap::Avx2;
  return best;
}

// The best build of kernel `name` for this CPU.
#define SUBNET_PICK(name) pick(&portable::name, SUBNET_AVX2_OR(name), SUBNET_AVX512_OR(name))
#ifdef SUBNET_HAS_AVX2
#define SUBNET_AVX2_OR(name) &avx2::name
#else
#define SUBNET_AVX2_OR(name) &portable::name
#endif
#ifdef SUBNET_HAS_AVX512
#define SUBNET_AVX512_OR(name) &avx512::name
#else
#define SUBNET_AVX512_OR(name) SUBNET_AVX2_OR(name)
#endif

template <typename F>
F pick(F portable_fn, F avx2_fn, F avx512_fn) {
  switch (capability()) {
    case Cap::Avx512: return avx512_fn;
    case Cap::Avx2: return avx2_fn;
    default: return portable_fn;
  }
}

struct Prepared {
  at::Tensor x, bias, gate;  // contiguous, x's dtype; bias undefined if absent
  int64_t rows, units;
};

Prepared prepare(const at::Tensor& x, const std::optional<at::Tensor>& bias,
                 const at::Tensor& gate, int64_t act) {
  TORCH_CHECK(act >= 0 && act <= 3, "gated_act: unknown activation code ", act);
  TORCH_CHECK(x.dim() >= 1, "gated_act: x must have at least one dim");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "gated_act (CPU): float32/float64 only, got ", x.scalar_type());
  const int64_t n = x.size(-1);
  TORCH_CHECK(gate.dim() == 1 && gate.size(0) == n, "gated_act: gate must be (", n, ",)");
  Prepared p;
  p.x = x.contiguous();
  p.gate = gate.to(x.scalar_type()).contiguous();
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == n, "gated_act: bias must be (", n, ",)");
    p.bias = bias->to(x.scalar_type()).contiguous();
  }
  p.units = n;
  p.rows = n == 0 ? 0 : x.numel() / n;
  return p;
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

}  // namespace

at::Tensor gated_act_fwd_cpu(const at::Tensor& x, const std::optional<at::Tensor>& bias,
                             const at::Tensor& gate, int64_t act) {
  Prepared p = prepare(x, bias, gate, act);
  at::Tensor y = new_output(p.x.sizes(), p.x.options());
  if (y.numel() == 0) return y;
  const Act a = static_cast<Act>(act);
  if (x.scalar_type() == at::kFloat) {
    auto f = SUBNET_PICK(fwd_f32);
    f(p.x.const_data_ptr<float>(), ptr_or_null<float>(p.bias), p.gate.const_data_ptr<float>(),
      y.mutable_data_ptr<float>(), p.rows, p.units, a);
  } else {
    auto f = SUBNET_PICK(fwd_f64);
    f(p.x.const_data_ptr<double>(), ptr_or_null<double>(p.bias), p.gate.const_data_ptr<double>(),
      y.mutable_data_ptr<double>(), p.rows, p.units, a);
  }
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_act_bwd_cpu(
    const at::Tensor& grad, const at::Tensor& x, const std::optional<at::Tensor>& bias,
    const at::Tensor& gate, int64_t act) {
  Prepared p = prepare(x, bias, gate, act);
  TORCH_CHECK(grad.sizes() == x.sizes(), "gated_act backward: grad shape mismatch");
  at::Tensor dy = grad.to(x.scalar_type()).contiguous();
  at::Tensor dx = new_output(p.x.sizes(), p.x.options());
  const int64_t chunks = (p.rows + portable::kRowChunk - 1) / portable::kRowChunk;
  at::Tensor parts = at::empty({2, std::max<int64_t>(chunks, 1), p.units}, p.x.options());
  at::Tensor dgate = at::zeros({p.units}, p.x.options());
  at::Tensor dbias = at::zeros({p.units}, p.x.options());
  if (p.rows > 0 && p.units > 0) {
    const Act a = static_cast<Act>(act);
    if (x.scalar_type() == at::kFloat) {
      auto f = SUBNET_PICK(bwd_f32);
      float* pg = parts.mutable_data_ptr<float>();
      f(dy.const_data_ptr<float>(), p.x.const_data_ptr<float>(), ptr_or_null<float>(p.bias),
        p.gate.const_data_ptr<float>(), dx.mutable_data_ptr<float>(), pg, pg + chunks * p.units,
        p.rows, p.units, a);
      portable::reduce_chunks<float>(pg, dgate.mutable_data_ptr<float>(), chunks, p.units);
      portable::reduce_chunks<float>(pg + chunks * p.units, dbias.mutable_data_ptr<float>(),
                                     chunks, p.units);
    } else {
      auto f = SUBNET_PICK(bwd_f64);
      double* pg = parts.mutable_data_ptr<double>();
      f(dy.const_data_ptr<double>(), p.x.const_data_ptr<double>(), ptr_or_null<double>(p.bias),
        p.gate.const_data_ptr<double>(), dx.mutable_data_ptr<double>(), pg, pg + chunks * p.units,
        p.rows, p.units, a);
      portable::reduce_chunks<double>(pg, dgate.mutable_data_ptr<double>(), chunks, p.units);
      portable::reduce_chunks<double>(pg + chunks * p.units, dbias.mutable_data_ptr<double>(),
                                      chunks, p.units);
    }
  }
  const auto bias_type = p.bias.defined() ? bias->scalar_type() : gate.scalar_type();
  return {dx, dbias.to(bias_type), dgate.to(gate.scalar_type())};
}

}  // namespace subnet
