// Device versions of the activations and their derivatives (float math), shared by the CUDA
// kernels. Codes as in csrc/common.h.
#pragma once

namespace subnet {
namespace cuda {

__device__ __forceinline__ float act_value(float z, int act) {
  switch (act) {
    case 0: return 0.5f * z * (1.f + erff(z * 0.70710678118654752f));
    case 1: return 0.5f * z * (1.f + tanhf(0.7978845608028654f * (z + 0.044715f * z * z * z)));
    case 2: return z > 0.f ? z : 0.f;
    default: return z / (1.f + __expf(-z));
  }
}

__device__ __forceinline__ void act_value_grad(float z, int act, float& a, float& da) {
  switch (act) {
    case 0: {
      const float cdf = 0.5f * (1.f + erff(z * 0.70710678118654752f));
      a = z * cdf;
      da = cdf + z * __expf(-0.5f * z * z) * 0.3989422804014327f;
      break;
    }
    case 1: {
      const float t = tanhf(0.7978845608028654f * (z + 0.044715f * z * z * z));
      a = 0.5f * z * (1.f + t);
      da = 0.5f * (1.f + t) + 0.5f * z * (1.f - t * t) * 0.7978845608028654f * (1.f + 0.134145f * z * z);
      break;
    }
    case 2:
      a = z > 0.f ? z : 0.f;
      da = z > 0.f ? 1.f : 0.f;
      break;
    default: {
      const float s = 1.f / (1.f + __expf(-z));
      a = z * s;
      da = s * (1.f + z * (1.f - s));
    }
  }
}

}  // namespace cuda
}  // namespace subnet
