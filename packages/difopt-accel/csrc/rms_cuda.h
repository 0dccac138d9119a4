// Launchers of the CUDA RMSProp kernels, in plain CUDA (raw pointers and a stream), so that
// rms_cuda.cu compiles with nvcc alone; rms_cuda.cpp adapts them to PyTorch tensors.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_types.h"
#include "rms_math.h"

namespace difopt_accel {
namespace cuda {

// Enqueue the forward step of `count` tensors, all of `dtype`, on `stream`, in a few
// multi-tensor launches.
cudaError_t launch_rms_forward(const ForwardTensor* tensors, int64_t count, Dtype dtype,
                               const RmsHyper& hyper, bool centered, cudaStream_t stream);

// Enqueue the backward of the forward step, as launch_rms_forward does.
cudaError_t launch_rms_backward(const BackwardTensor* tensors, int64_t count, Dtype dtype,
                                const RmsHyper& hyper, bool centered, cudaStream_t stream);

}  // namespace cuda
}  // namespace difopt_accel
