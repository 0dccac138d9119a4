// Launchers of the CUDA Adam kernels, in plain CUDA (raw pointers and a stream), so that
// adam_cuda.cu compiles with nvcc alone; adam_cuda.cpp adapts them to PyTorch tensors.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "adam_math.h"

namespace difopt_accel {
namespace cuda {

enum class Dtype : int { kFloat16, kBFloat16, kFloat32, kFloat64 };

// One tensor of a forward call: out = base + factor * dir (base may be null or alias out),
// mu_out/nu_out receive the new moments (they may alias mu/nu).
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

// One tensor of a backward call; d_mu_new/d_nu_new may be null (zero), and d_mu/d_nu may be
// null (not wanted).
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

// The step number: known on the host, or read by the kernel from device memory (so that a
// device-resident counter never costs a host synchronisation).
struct Step {
  int64_t host;
  const int64_t* device;  // used when not null
};

// Enqueue the forward step of `count` tensors, all of `dtype`, on `stream`: a few launches,
// each covering up to a fixed number of tensors, never one launch per tensor.
cudaError_t launch_adam_forward(const ForwardTensor* tensors, int64_t count, Dtype dtype,
                                const AdamHyper& hyper, Step step, cudaStream_t stream);

// Enqueue the backward of the forward step, as launch_adam_forward does.
cudaError_t launch_adam_backward(const BackwardTensor* tensors, int64_t count, Dtype dtype,
                                 const AdamHyper& hyper, Step step, cudaStream_t stream);

}  // namespace cuda
}  // namespace difopt_accel
