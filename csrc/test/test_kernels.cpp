// C++ tests of the CPU kernels, run by ctest: gated_act (forward and backward) against a
// scalar double-precision loop, gather_compact against naive indexing, and a call through
// the torch dispatcher (the registration in subnet_kernels.cpp).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <vector>

#include "common.h"
#include "ops.h"

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

double act(double z, int a, double* grad) {
  const double pi = 3.14159265358979323846;
  switch (a) {
    case 0: {
      const double cdf = 0.5 * (1 + std::erf(z / std::sqrt(2.0)));
      *grad = cdf + z * std::exp(-0.5 * z * z) / std::sqrt(2 * pi);
      return z * cdf;
    }
    case 1: {
      const double c = std::sqrt(2 / pi), t = std::tanh(c * (z + 0.044715 * z * z * z));
      *grad = 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * c * (1 + 3 * 0.044715 * z * z);
      return 0.5 * z * (1 + t);
    }
    case 2:
      *grad = z > 0 ? 1 : 0;
      return z > 0 ? z : 0;
    default: {
      const double s = 1 / (1 + std::exp(-z));
      *grad = s * (1 + z * (1 - s));
      return z * s;
    }
  }
}

double max_rel(const at::Tensor& got, const at::Tensor& want) {
  const double scale = std::max(want.abs().max().item<double>(), 0.1);
  return (got.to(at::kDouble) - want).abs().max().item<double>() / scale;
}

void test_gated_act(at::ScalarType dtype, int64_t rows, int64_t n, bool with_bias, int a) {
  const auto opt = at::TensorOptions().dtype(dtype);
  at::Tensor x = at::randn({rows, n}, opt), dy = at::randn({rows, n}, opt);
  at::Tensor g = at::rand({n}, opt) * (at::rand({n}, opt) > 0.3).to(dtype);
  std::optional<at::Tensor> b;
  if (with_bias) b = at::randn({n}, opt);
  at::Tensor y = subnet::gated_act_fwd_cpu(x, b, g, a);
  auto [dx, db, dg] = subnet::gated_act_bwd_cpu(dy, x, b, g, a);

  at::Tensor xd = x.to(at::kDouble), dyd = dy.to(at::kDouble), gd = g.to(at::kDouble);
  at::Tensor want_y = at::empty_like(xd), want_dx = at::empty_like(xd);
  at::Tensor want_dg = at::zeros({n}, xd.options()), want_db = at::zeros({n}, xd.options());
  auto X = xd.accessor<double, 2>(), DY = dyd.accessor<double, 2>();
  auto Y = want_y.accessor<double, 2>(), DX = want_dx.accessor<double, 2>();
  auto G = gd.accessor<double, 1>(), DG = want_dg.accessor<double, 1>(), DB = want_db.accessor<double, 1>();
  at::Tensor bd = with_bias ? b->to(at::kDouble) : at::zeros({n}, xd.options());
  auto B = bd.accessor<double, 1>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) {
      double da;
      const double v = act(X[r][j] + B[j], a, &da);
      Y[r][j] = G[j] * v;
      DX[r][j] = DY[r][j] * G[j] * da;
      DG[j] += DY[r][j] * v;
      DB[j] += DX[r][j];
    }
  const double tol = dtype == at::kFloat ? 1e-4 : 1e-10;
  const std::string tag = std::string(c10::toString(dtype)) + " act " + std::to_string(a) + " " +
                          std::to_string(rows) + "x" + std::to_string(n) + (with_bias ? " bias" : "");
  expect(max_rel(y, want_y) < tol, "gated_act fwd " + tag);
  expect(max_rel(dx, want_dx) < tol, "gated_act dx " + tag);
  expect(max_rel(dg, want_dg) < tol, "gated_act dgate " + tag);
  expect(max_rel(db, want_db) < tol, "gated_act dbias " + tag);
}

// One 2-D output (rows {3, 0} of all columns) and one 3-D (dim 1 {1}, dim 2 {4, 2}).
void test_gather_compact() {
  using namespace subnet::table;
  at::Tensor a = at::randn({4, 6}), c = at::randn({2, 3, 5});
  std::vector<int64_t> t(kHeader + 2 * kRecord, 0);
  t[0] = 2;
  t[1] = 2 * 6 + 2 * 1 * 2;
  int64_t* r0 = t.data() + kHeader;
  int64_t* r1 = r0 + kRecord;
  const int64_t idx = static_cast<int64_t>(t.size());
  r0[kSrcId] = 0; r0[kSrcBase] = 0; r0[kOutOffset] = 0; r0[kNumel] = 12;
  int64_t s0[] = {1, 1, 2, 6}, st0[] = {0, 0, 6, 1}, ix0[] = {-1, -1, idx, -1};
  r1[kSrcId] = 1; r1[kSrcBase] = 24; r1[kOutOffset] = 12; r1[kNumel] = 4;
  int64_t s1[] = {1, 2, 1, 2}, st1[] = {0, 15, 5, 1}, ix1[] = {-1, -1, idx + 2, idx + 3};
  for (int d = 0; d < 4; ++d) {
    r0[kSizes + d] = s0[d]; r0[kStrides + d] = st0[d]; r0[kIndex + d] = ix0[d];
    r1[kSizes + d] = s1[d]; r1[kStrides + d] = st1[d]; r1[kIndex + d] = ix1[d];
  }
  t.insert(t.end(), {3, 0, 1, 4, 2});
  at::Tensor table = at::tensor(t, at::TensorOptions().dtype(at::kLong));
  at::Tensor out = subnet::gather_compact_cpu({a, c}, table, t[1]);
  at::Tensor want0 = a.index_select(0, at::tensor(std::vector<int64_t>{3, 0}));
  at::Tensor want1 = c.index_select(1, at::tensor(std::vector<int64_t>{1}))
                         .index_select(2, at::tensor(std::vector<int64_t>{4, 2}));
  expect(at::equal(out.slice(0, 0, 12).view({2, 6}), want0), "gather_compact 2-D rows");
  expect(at::equal(out.slice(0, 12, 16).view({2, 1, 2}), want1), "gather_compact 3-D");

  bool threw = false;
  t[t.size() - 1] = 40;  // would read past the end of source 1 (30 elements)
  try {
    subnet::gather_compact_cpu({a, c}, at::tensor(t, at::TensorOptions().dtype(at::kLong)), t[1]);
  } catch (const c10::Error&) {
    threw = true;
  }
  expect(threw, "gather_compact rejects a table that reads past a source");
}

void test_dispatcher() {
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("subnet_kernels::_gated_act_fwd", "")
                .typed<at::Tensor(const at::Tensor&, const std::optional<at::Tensor>&,
                                  const at::Tensor&, int64_t)>();
  at::Tensor x = at::randn({5, 8}), g = at::ones({8});
  at::Tensor y = op.call(x, std::nullopt, g, 2);
  expect(at::allclose(y, at::relu(x)), "dispatcher call of _gated_act_fwd (relu, gate 1)");
}

}  // namespace

int main() {
  at::manual_seed(0);
  // Every CPU build of the kernel this machine can run (the variable caps the choice).
  for (const char* cap : {"portable", "avx2", "best"}) {
    setenv("SUBNET_CPU_CAPABILITY", cap, 1);
    for (auto dtype : {at::kFloat, at::kDouble})
      for (int a = 0; a < 4; ++a) {
        test_gated_act(dtype, 3, 37, true, a);
        test_gated_act(dtype, 130, 64, a % 2 == 0, a);
        test_gated_act(dtype, 1, 1, false, a);
      }
  }
  unsetenv("SUBNET_CPU_CAPABILITY");
  test_gather_compact();
  test_dispatcher();
  std::printf(failures ? "%d FAILED\n" : "all passed\n", failures);
  return failures ? 1 : 0;
}
