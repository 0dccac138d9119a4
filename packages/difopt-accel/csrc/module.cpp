// The Python extension module difopt_accel._C.
//
// Importing it loads this shared library, whose static initializers register the
// difopt_accel operators with PyTorch's dispatcher (schemas.cpp, and the kernels of
// <op>_cpu.cpp and <op>_cuda.cpp); the operators are then reached through
// torch.ops.difopt_accel. The module itself only describes the build.
#include <pybind11/pybind11.h>

#ifndef DIFOPT_ACCEL_WITH_CUDA
#define DIFOPT_ACCEL_WITH_CUDA 0
#endif
#ifndef DIFOPT_ACCEL_TORCH_VERSION
#define DIFOPT_ACCEL_TORCH_VERSION "unknown"
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "Native fused optimizer kernels of difopt-accel (registered as torch.ops.difopt_accel).";
  m.attr("WITH_CUDA") = pybind11::bool_(DIFOPT_ACCEL_WITH_CUDA != 0);
#if defined(_OPENMP)
  m.attr("WITH_OPENMP") = pybind11::bool_(true);
#else
  m.attr("WITH_OPENMP") = pybind11::bool_(false);
#endif
  m.attr("TORCH_VERSION") = DIFOPT_ACCEL_TORCH_VERSION;
}
