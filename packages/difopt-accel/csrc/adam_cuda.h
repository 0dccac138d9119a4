// Launchers of the CUDA Adam kernels, in plain CUDA (raw pointers and a stream), so that
// adam_cuda.cu compiles with nvcc alone; adam_cuda.cpp adapts them to PyTorch tensors.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "adam_math.h"
#include "cuda_types.h"

namespace difopt_accel {
namespace cuda {

// Enqueue the forward step of `count` tensors, all of `dtype`, on `stream`: a few launches,
// each covering up to a fixed number of tensors, never one launch per tensor.
cudaError_t launch_adam_forward(const ForwardTensor* tensors, int64_t count, Dtype dtype,
                                const AdamHyper& hyper, Step step, cudaStream_t stream);

// Enqueue the backward of the forward step, as launch_adam_forward does.
cudaError_t launch_adam_backward(const BackwardTensor* tensors, int64_t count, Dtype dtype,
                                 const AdamHyper& hyper, Step step, cudaStream_t stream);

}  // namespace cuda
}  // namespace difopt_accel
