// Declarations of the device kernels registered in subnet_kernels.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/List.h>
#include <c10/util/Optional.h>

#include <tuple>

namespace subnet {

at::Tensor gated_act_fwd_cpu(const at::Tensor& x, const std::optional<at::Tensor>& bias,
                             const at::Tensor& gate, int64_t act);
std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_act_bwd_cpu(
    const at::Tensor& grad, const at::Tensor& x, const std::optional<at::Tensor>& bias,
    const at::Tensor& gate, int64_t act);
at::Tensor gather_compact_cpu(at::TensorList sources, const at::Tensor& table, int64_t total);

#ifdef SUBNET_WITH_CUDA
at::Tensor gated_act_fwd_cuda(const at::Tensor& x, const std::optional<at::Tensor>& bias,
                              const at::Tensor& gate, int64_t act);
std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_act_bwd_cuda(
    const at::Tensor& grad, const at::Tensor& x, const std::optional<at::Tensor>& bias,
    const at::Tensor& gate, int64_t act);
at::Tensor gather_compact_run_cuda(at::TensorList sources, const at::Tensor& tasks,
                                   const at::Tensor& offsets, int64_t total);
#endif

}  // namespace subnet
