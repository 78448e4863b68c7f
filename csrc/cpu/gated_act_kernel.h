// The gated activation kernels, written once with at::vec::Vectorized and compiled once per
// CPU capability: gated_act.cpp (portable), gated_act_avx2.cpp and gated_act_avx512.cpp
// include this file with SUBNET_CAP naming the namespace; no include guard. Everything it
// defines lives in that namespace, so the AVX builds emit no out-of-line code that the linker
// could pick for a portable caller (checked with `nm -C gated_act_avx512.o`: its only weak
// code symbols are in subnet::avx512). Keep it that way: no non-namespaced inline helpers.

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <cstdint>

#include "../common.h"

namespace subnet {
namespace SUBNET_CAP {

template <typename T>
using Vec = at::vec::Vectorized<T>;

// act(z) and, for the backward, act(z) with act'(z) sharing the transcendental calls.
template <Act A, typename T>
struct ActFn;

template <typename T>
struct ActFn<Act::Gelu, T> {
  static Vec<T> value(Vec<T> z) {
    return Vec<T>(T(0.5)) * z * (Vec<T>(T(1)) + (z * Vec<T>(T(M_SQRT1_2))).erf());
  }
  static void both(Vec<T> z, Vec<T>& a, Vec<T>& da) {
    const Vec<T> cdf = Vec<T>(T(0.5)) * (Vec<T>(T(1)) + (z * Vec<T>(T(M_SQRT1_2))).erf());
    const Vec<T> pdf = (Vec<T>(T(-0.5)) * z * z).exp() * Vec<T>(T(0.3989422804014327));
    a = z * cdf;
    da = at::vec::fmadd(z, pdf, cdf);
  }
};

// float: the erf of the cdf and the pdf share one exp(-z^2/2), using the same rational
// approximation as ATen's vectorised erf (Abramowitz-Stegun 7.1.26, |error| < 1.5e-7).
template <>
inline void ActFn<Act::Gelu, float>::both(Vec<float> z, Vec<float>& a, Vec<float>& da) {
  using V = Vec<float>;
  const V one(1.f), x = z * V(float(M_SQRT1_2));
  const V t = one / at::vec::fmadd(V(0.3275911f), x.abs(), one);
  V r = at::vec::fmadd(V(1.061405429f), t, V(-1.453152027f));
  r = at::vec::fmadd(r, t, V(1.421413741f));
  r = at::vec::fmadd(r, t, V(-0.284496736f));
  r = at::vec::fmadd(r, t, V(0.254829592f));
  const V e = (x * x).neg().exp();                   // exp(-z^2 / 2)
  const V erf_abs = one - r * t * e;
  const V erf = V::blendv(erf_abs, erf_abs.neg(), x < V(0.f));
  const V cdf = V(0.5f) * (one + erf);
  a = z * cdf;
  da = at::vec::fmadd(z, e * V(0.3989422804014327f), cdf);
}

template <typename T>
struct ActFn<Act::GeluTanh, T> {
  static constexpr double kC = 0.7978845608028654;  // sqrt(2/pi)
  static constexpr double kK = 0.044715;
  static Vec<T> value(Vec<T> z) {
    const Vec<T> u = Vec<T>(T(kC)) * (z + Vec<T>(T(kK)) * z * z * z);
    return Vec<T>(T(0.5)) * z * (Vec<T>(T(1)) + u.tanh());
  }
  static void both(Vec<T> z, Vec<T>& a, Vec<T>& da) {
    const Vec<T> z2 = z * z;
    const Vec<T> t = (Vec<T>(T(kC)) * (z + Vec<T>(T(kK)) * z2 * z)).tanh();
    const Vec<T> half_one_t = Vec<T>(T(0.5)) * (Vec<T>(T(1)) + t);
    a = z * half_one_t;
    const Vec<T> du = Vec<T>(T(kC)) * (Vec<T>(T(1)) + Vec<T>(T(3 * kK)) * z2);
    da = half_one_t + Vec<T>(T(0.5)) * z * (Vec<T>(T(1)) - t * t) * du;
  }
};

template <typename T>
struct ActFn<Act::Relu, T> {
  static Vec<T> value(Vec<T> z) { return at::vec::maximum(z, Vec<T>(T(0))); }
  static void both(Vec<T> z, Vec<T>& a, Vec<T>& da) {
    const Vec<T> zero(T(0));
    a = at::vec::maximum(z, zero);
    da = Vec<T>::blendv(zero, Vec<T>(T(1)), z > zero);
  }
};

template <typename T>
struct ActFn<Act::Silu, T> {
  static Vec<T> value(Vec<T> z) { return z / (Vec<T>(T(1)) + z.neg().exp()); }
  static void both(Vec<T> z, Vec<T>& a, Vec<T>& da) {
    const Vec<T> one(T(1));
    const Vec<T> s = one / (one + z.neg().exp());
    a = z * s;
    da = s * (one + z * (one - s));
  }
};

// Rows per parallel task; also the fixed row chunk of the backward's per-unit partial sums,
// which keeps dgate/dbias bitwise deterministic whatever the thread count.
constexpr int64_t kRowChunk = 64;

template <Act A, typename T>
void fwd_rows(const T* x, const T* b, const T* g, T* y, int64_t M, int64_t N) {
  constexpr int64_t W = Vec<T>::size();
  at::parallel_for(0, M, kRowChunk, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * N;
      T* yr = y + r * N;
      for (int64_t j = 0; j < N; j += W) {
        const int64_t n = std::min<int64_t>(W, N - j);
        Vec<T> z = Vec<T>::loadu(xr + j, n);
        if (b) z = z + Vec<T>::loadu(b + j, n);
        (Vec<T>::loadu(g + j, n) * ActFn<A, T>::value(z)).store(yr + j, n);
      }
    }
  });
}

// dx for every row; dgate/dbias partial sums per kRowChunk rows into part_g/part_b
// (n_chunks x N each), reduced in chunk order afterwards.
template <Act A, typename T>
void bwd_rows(const T* dy, const T* x, const T* b, const T* g, T* dx, T* part_g, T* part_b,
              int64_t M, int64_t N) {
  constexpr int64_t W = Vec<T>::size();
  const int64_t n_chunks = (M + kRowChunk - 1) / kRowChunk;
  at::parallel_for(0, n_chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      T* pg = part_g + c * N;
      T* pb = part_b + c * N;
      std::fill(pg, pg + N, T(0));
      std::fill(pb, pb + N, T(0));
      const int64_t r_end = std::min(M, (c + 1) * kRowChunk);
      for (int64_t r = c * kRowChunk; r < r_end; ++r) {
        const T* xr = x + r * N;
        const T* dyr = dy + r * N;
        T* dxr = dx + r * N;
        for (int64_t j = 0; j < N; j += W) {
          const int64_t n = std::min<int64_t>(W, N - j);
          Vec<T> z = Vec<T>::loadu(xr + j, n);
          if (b) z = z + Vec<T>::loadu(b + j, n);
          Vec<T> a, da;
          ActFn<A, T>::both(z, a, da);
          const Vec<T> d = Vec<T>::loadu(dyr + j, n);
          const Vec<T> dz = d * Vec<T>::loadu(g + j, n) * da;
          dz.store(dxr + j, n);
          at::vec::fmadd(d, a, Vec<T>::loadu(pg + j, n)).store(pg + j, n);
          (Vec<T>::loadu(pb + j, n) + dz).store(pb + j, n);
        }
      }
    }
  });
}

template <typename T>
void reduce_chunks(const T* part, T* out, int64_t n_chunks, int64_t N) {
  at::parallel_for(0, N, 1024, [&](int64_t jb, int64_t je) {
    for (int64_t j = jb; j < je; ++j) out[j] = T(0);
    for (int64_t c = 0; c < n_chunks; ++c)
      for (int64_t j = jb; j < je; ++j) out[j] += part[c * N + j];
  });
}

template <typename T>
void fwd(const T* x, const T* b, const T* g, T* y, int64_t M, int64_t N, Act act) {
  switch (act) {
    case Act::Gelu: return fwd_rows<Act::Gelu, T>(x, b, g, y, M, N);
    case Act::GeluTanh: return fwd_rows<Act::GeluTanh, T>(x, b, g, y, M, N);
    case Act::Relu: return fwd_rows<Act::Relu, T>(x, b, g, y, M, N);
    case Act::Silu: return fwd_rows<Act::Silu, T>(x, b, g, y, M, N);
  }
}

template <typename T>
void bwd(const T* dy, const T* x, const T* b, const T* g, T* dx, T* part_g, T* part_b,
         int64_t M, int64_t N, Act act) {
  switch (act) {
    case Act::Gelu: return bwd_rows<Act::Gelu, T>(dy, x, b, g, dx, part_g, part_b, M, N);
    case Act::GeluTanh: return bwd_rows<Act::GeluTanh, T>(dy, x, b, g, dx, part_g, part_b, M, N);
    case Act::Relu: return bwd_rows<Act::Relu, T>(dy, x, b, g, dx, part_g, part_b, M, N);
    case Act::Silu: return bwd_rows<Act::Silu, T>(dy, x, b, g, dx, part_g, part_b, M, N);
  }
}

// The entry points gated_act.cpp calls (one set per capability; declared there too).
void fwd_f32(const float* x, const float* b, const float* g, float* y, int64_t M, int64_t N,
             Act act) {
  fwd<float>(x, b, g, y, M, N, act);
}
void fwd_f64(const double* x, const double* b, const double* g, double* y, int64_t M, int64_t N,
             Act act) {
  fwd<double>(x, b, g, y, M, N, act);
}
void bwd_f32(const float* dy, const float* x, const float* b, const float* g, float* dx,
             float* pg, float* pb, int64_t M, int64_t N, Act act) {
  bwd<float>(dy, x, b, g, dx, pg, pb, M, N, act);
}
void bwd_f64(const double* dy, const double* x, const double* b, const double* g, double* dx,
             double* pg, double* pb, int64_t M, int64_t N, Act act) {
  bwd<double>(dy, x, b, g, dx, pg, pb, M, N, act);
}

}  // namespace SUBNET_CAP
}  // namespace subnet
