// Launchers of the CUDA momentum (trace) kernels, in plain CUDA (raw pointers and a stream),
// so that trace_cuda.cu compiles with nvcc alone; trace_cuda.cpp adapts them to PyTorch
// tensors.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_types.h"
#include "trace_math.h"

namespace difopt_accel {
namespace cuda {

// One tensor of a forward call: out = base + factor * dir (base may be null or alias out),
// buf_out receives the new buffer (it may alias buf).
struct TraceForwardTensor {
  const void* g;
  const void* buf;
  const void* base;
  void* out;
  void* buf_out;
  int64_t numel;
};

// One tensor of a backward call; d_buf_new may be null (zero), d_buf may be null (not
// wanted).
struct TraceBackwardTensor {
  const void* d_out;
  const void* d_buf_new;
  void* d_g;
  void* d_buf;
  int64_t numel;
};

// Enqueue the forward step of `count` tensors, all of `dtype`, on `stream`, in a few
// multi-tensor launches. Whether this is the first step comes from `step`, read by the
// kernels when it is on the device.
cudaError_t launch_trace_forward(const TraceForwardTensor* tensors, int64_t count, Dtype dtype,
                                 const TraceHyper& hyper, Step step, cudaStream_t stream);

// Enqueue the backward of the forward step, as launch_trace_forward does.
cudaError_t launch_trace_backward(const TraceBackwardTensor* tensors, int64_t count,
                                  Dtype dtype, const TraceHyper& hyper, Step step,
                                  cudaStream_t stream);

}  // namespace cuda
}  // namespace difopt_accel
