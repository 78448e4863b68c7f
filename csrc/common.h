// Shared definitions of the subnet_kernels ops: activation codes and the gather table layout.
// Both mirror subnet_kernels/reference.py (ACTIVATIONS) and subnet_kernels/plan.py.
#pragma once

#include <cstdint>

namespace subnet {

// Order matches reference.ACTIVATIONS.
enum class Act : int64_t { Gelu = 0, GeluTanh = 1, Relu = 2, Silu = 3 };

// Gather table layout (see plan.py): header, then one record per output, then indices.
namespace table {
constexpr int64_t kMaxDims = 4;
constexpr int64_t kHeader = 2;
constexpr int64_t kRecord = 16;
constexpr int64_t kSrcId = 0, kSrcBase = 1, kOutOffset = 2, kNumel = 3;
constexpr int64_t kSizes = 4, kStrides = 8, kIndex = 12;
}  // namespace table

}  // namespace subnet
