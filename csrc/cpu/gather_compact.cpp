// gather_compact on the CPU: every output of a plan table (see subnet_kernels/plan.py) built
// in one call. Work is split into row ranges of all outputs (a row = the last dim), so large
// and small tensors share the threads; rows whose last dim is kept whole are one memcpy,
// and kept indices that form long runs (e.g. whole heads) are copied run by run.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <vector>

#include "../common.h"
#include "../alloc.h"
#include "../ops.h"
#include "../table_check.h"

namespace subnet {
namespace {

using namespace table;

struct Output {
  const char* src;     // source data
  char* dst;           // output data
  int64_t sizes[kMaxDims];
  int64_t strides[kMaxDims];
  const int64_t* index[kMaxDims];  // nullptr = keep all
  int64_t rows;        // numel / sizes[3]
  // Runs of consecutive kept indices of the last dim: (dst col, src col, length).
  std::vector<int64_t> runs;
};

constexpr int64_t kMinRun = 4;  // below this average run length, copy element by element

void build_runs(Output& o) {
  const int64_t n = o.sizes[3];
  const int64_t* idx = o.index[3];
  if (idx == nullptr || o.strides[3] != 1 || n == 0) return;
  std::vector<int64_t> runs;
  int64_t start = 0;
  for (int64_t j = 1; j <= n; ++j) {
    if (j == n || idx[j] != idx[j - 1] + 1) {
      runs.insert(runs.end(), {start, idx[start], j - start});
      start = j;
    }
  }
  if (n >= kMinRun * static_cast<int64_t>(runs.size() / 3)) o.runs = std::move(runs);
}

template <typename E>  // E: an unsigned integer type of the element's size
void copy_rows(const Output& o, int64_t begin, int64_t end, int64_t esize) {
  const int64_t n = o.sizes[3];
  const E* src = reinterpret_cast<const E*>(o.src);
  E* dst = reinterpret_cast<E*>(o.dst);
  for (int64_t r = begin; r < end; ++r) {
    // Source offset of the row from the coordinates of its first three dims.
    int64_t rem = r, off = 0;
    for (int64_t d = kMaxDims - 2; d >= 0; --d) {
      const int64_t c = rem % o.sizes[d];
      rem /= o.sizes[d];
      off += (o.index[d] ? o.index[d][c] : c) * o.strides[d];
    }
    E* out = dst + r * n;
    const E* in = src + off;
    if (o.index[3] == nullptr && o.strides[3] == 1) {
      std::memcpy(out, in, n * esize);
    } else if (!o.runs.empty()) {
      for (size_t k = 0; k < o.runs.size(); k += 3)
        std::memcpy(out + o.runs[k], in + o.runs[k + 1], o.runs[k + 2] * esize);
    } else if (o.index[3] != nullptr) {
      const int64_t* idx = o.index[3];
      const int64_t s = o.strides[3];
      for (int64_t j = 0; j < n; ++j) out[j] = in[idx[j] * s];
    } else {
      const int64_t s = o.strides[3];
      for (int64_t j = 0; j < n; ++j) out[j] = in[j * s];
    }
  }
}

void copy_rows_any(const Output& o, int64_t begin, int64_t end, int64_t esize) {
  switch (esize) {
    case 1: return copy_rows<uint8_t>(o, begin, end, esize);
    case 2: return copy_rows<uint16_t>(o, begin, end, esize);
    case 4: return copy_rows<uint32_t>(o, begin, end, esize);
    case 8: return copy_rows<uint64_t>(o, begin, end, esize);
    default: TORCH_CHECK(false, "gather_compact: unsupported element size ", esize);
  }
}

}  // namespace

at::Tensor gather_compact_cpu(at::TensorList sources, const at::Tensor& table_t, int64_t total) {
  TORCH_CHECK(!sources.empty(), "gather_compact: no sources");
  TORCH_CHECK(table_t.scalar_type() == at::kLong && table_t.dim() == 1,
              "gather_compact: table must be a 1-D int64 tensor");
  const at::Tensor tbl = table_t.cpu().contiguous();
  const int64_t* t = tbl.const_data_ptr<int64_t>();
  const int64_t len = tbl.numel();

  const auto dtype = sources[0].scalar_type();
  std::vector<at::Tensor> srcs;
  std::vector<int64_t> numels;
  for (const auto& s : sources) {
    TORCH_CHECK(s.device().is_cpu() && s.scalar_type() == dtype,
                "gather_compact: sources must be CPU tensors of one dtype");
    srcs.push_back(s.contiguous());
    numels.push_back(s.numel());
  }
  check_table(t, len, total, numels);
  const int64_t n_out = t[0];
  at::Tensor out = new_output({total}, sources[0].options());
  const int64_t esize = out.element_size();
  char* out_base = static_cast<char*>(out.data_ptr());

  std::vector<Output> outs(n_out);
  for (int64_t i = 0; i < n_out; ++i) {
    const int64_t* rec = t + kHeader + i * kRecord;
    Output& o = outs[i];
    o.src = static_cast<const char*>(srcs[rec[kSrcId]].const_data_ptr());
    o.dst = out_base + rec[kOutOffset] * esize;
    for (int64_t d = 0; d < kMaxDims; ++d) {
      o.sizes[d] = rec[kSizes + d];
      o.strides[d] = rec[kStrides + d];
      o.index[d] = rec[kIndex + d] < 0 ? nullptr : t + rec[kIndex + d];
    }
    o.rows = o.sizes[3] == 0 ? 0 : rec[kNumel] / o.sizes[3];
    build_runs(o);
  }

  // Tasks of roughly equal bytes: (output, first row, end row).
  constexpr int64_t kTaskBytes = 1 << 16;
  std::vector<int64_t> tasks;
  for (int64_t i = 0; i < n_out; ++i) {
    const int64_t row_bytes = std::max<int64_t>(outs[i].sizes[3] * esize, 1);
    const int64_t step = std::max<int64_t>(kTaskBytes / row_bytes, 1);
    for (int64_t r = 0; r < outs[i].rows; r += step)
      tasks.insert(tasks.end(), {i, r, std::min(outs[i].rows, r + step)});
  }
  const int64_t n_tasks = static_cast<int64_t>(tasks.size() / 3);
  at::parallel_for(0, n_tasks, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k)
      copy_rows_any(outs[tasks[3 * k]], tasks[3 * k + 1], tasks[3 * k + 2], esize);
  });
  return out;
}

}  // namespace subnet
