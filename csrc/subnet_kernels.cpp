// Registers the subnet_kernels ops with the torch dispatcher (schemas + CPU/CUDA kernels).
// The Python package wraps them in torch.library custom ops with autograd (ops.py).
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY(subnet_kernels, m) {
  m.def("_gated_act_fwd(Tensor x, Tensor? bias, Tensor gate, int act) -> Tensor");
  m.def("_gated_act_bwd(Tensor grad, Tensor x, Tensor? bias, Tensor gate, int act)"
        " -> (Tensor, Tensor, Tensor)");
  m.def("_gather_compact(Tensor[] sources, Tensor table, int total) -> Tensor");
  // The same gather from the table compiled into copy tasks (plan.py CopyProgram): CUDA only.
  m.def("_gather_compact_run(Tensor[] sources, Tensor tasks, Tensor offsets, int total) -> Tensor");
}

TORCH_LIBRARY_IMPL(subnet_kernels, CPU, m) {
  m.impl("_gated_act_fwd", &subnet::gated_act_fwd_cpu);
  m.impl("_gated_act_bwd", &subnet::gated_act_bwd_cpu);
  m.impl("_gather_compact", &subnet::gather_compact_cpu);
}

#ifdef SUBNET_WITH_CUDA
TORCH_LIBRARY_IMPL(subnet_kernels, CUDA, m) {
  m.impl("_gated_act_fwd", &subnet::gated_act_fwd_cuda);
  m.impl("_gated_act_bwd", &subnet::gated_act_bwd_cuda);
  m.impl("_gather_compact_run", &subnet::gather_compact_run_cuda);
}
#endif

#ifdef TORCH_EXTENSION_NAME
// A Python module with no functions: importing it runs the registrations above.
#include <Python.h>
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&def);
}
#endif
