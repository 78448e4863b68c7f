// Host-side validation of a gather table (subnet_kernels/plan.py layout) against the source
// sizes: memory safety, i.e. no kernel reads outside a source or writes outside the output.
// (That each kept index is below its own dim's size is checked where plans are built,
// subnet_kernels.plan.normalize_plans; the table carries strides, not source shapes.)
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.h"

namespace subnet {

inline void check_table(const int64_t* t, int64_t len, int64_t total,
                        const std::vector<int64_t>& source_numels) {
  using namespace table;
  TORCH_CHECK(len >= kHeader && t[1] == total, "gather_compact: table/total mismatch");
  const int64_t n_out = t[0];
  TORCH_CHECK(n_out >= 0 && len >= kHeader + n_out * kRecord, "gather_compact: truncated table");
  for (int64_t i = 0; i < n_out; ++i) {
    const int64_t* rec = t + kHeader + i * kRecord;
    const int64_t sid = rec[kSrcId];
    TORCH_CHECK(sid >= 0 && sid < static_cast<int64_t>(source_numels.size()),
                "gather_compact: output ", i, " has a bad source id ", sid);
    int64_t numel = 1, max_off = 0;
    for (int64_t d = 0; d < kMaxDims; ++d) {
      const int64_t size = rec[kSizes + d], where = rec[kIndex + d];
      TORCH_CHECK(size >= 0 && rec[kStrides + d] >= 0, "gather_compact: bad size/stride");
      numel *= size;
      if (size == 0) continue;
      int64_t hi = size - 1;
      if (where >= 0) {
        TORCH_CHECK(where + size <= len, "gather_compact: kept indices outside the table");
        hi = 0;
        for (int64_t c = 0; c < size; ++c) {
          TORCH_CHECK(t[where + c] >= 0, "gather_compact: negative kept index");
          hi = std::max(hi, t[where + c]);
        }
      }
      max_off += hi * rec[kStrides + d];
    }
    TORCH_CHECK(numel == rec[kNumel], "gather_compact: output ", i, " numel mismatch");
    TORCH_CHECK(rec[kOutOffset] >= 0 && rec[kOutOffset] + numel <= total,
                "gather_compact: output ", i, " outside the output buffer");
    TORCH_CHECK(numel == 0 || max_off < source_numels[sid],
                "gather_compact: output ", i, " reads past the end of source ", sid);
  }
}

}  // namespace subnet
