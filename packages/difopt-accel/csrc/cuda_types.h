// What the plain-CUDA launchers (<op>_cuda.cu) and their PyTorch glue (<op>_cuda.cpp) share:
// no PyTorch dependency, so the launchers compile with nvcc alone.
#pragma once

#include <cstdint>

namespace difopt_accel {
namespace cuda {

enum class Dtype : int { kFloat16, kBFloat16, kFloat32, kFloat64 };

// The step number: known on the host, or read by the kernel from device memory (so that a
// device-resident counter never costs a host synchronisation).
struct Step {
  int64_t host;
  const int64_t* device;  // used when not null
};

// One tensor of a forward call of an op with two moments (Adam's, RMSProp's mu and nu):
// out = base + factor * dir (base may be null or alias out), mu_out/nu_out receive the new
// moments (they may alias mu/nu). RMSProp leaves mu and mu_out null unless centered.
struct ForwardTensor {
  const void* g;
  const void* mu;
  const void* nu;
  const void* base;
  void* out;
  void* mu_out;
  void* nu_out;
  int64_t numel;
};

// One tensor of a backward call of such an op; d_mu_new/d_nu_new may be null (zero), and
// d_mu/d_nu may be null (not wanted). RMSProp leaves the mu pointers null unless centered.
struct BackwardTensor {
  const void* d_out;
  const void* d_mu_new;
  const void* d_nu_new;
  const void* g;
  const void* mu_new;
  const void* nu_new;
  void* d_g;
  void* d_mu;
  void* d_nu;
  int64_t numel;
};

}  // namespace cuda
}  // namespace difopt_accel
