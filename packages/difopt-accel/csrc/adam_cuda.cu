// CUDA kernels of the fused Adam step and its backward, for lists of tensors (the kernels of
// moments_cuda.cuh over the arithmetic of adam_math.h).
#include "adam_cuda.h"
#include "moments_cuda.cuh"

namespace difopt_accel {
namespace cuda {

cudaError_t launch_adam_forward(const ForwardTensor* tensors, int64_t count, Dtype dtype,
                                const AdamHyper& hyper, Step step, cudaStream_t stream) {
  return launch_moments<false>(tensors, count, dtype, true, stream, [&](auto tag) {
    return step_coeffs<OpMath<typename decltype(tag)::type>>(hyper, step);
  });
}

cudaError_t launch_adam_backward(const BackwardTensor* tensors, int64_t count, Dtype dtype,
                                 const AdamHyper& hyper, Step step, cudaStream_t stream) {
  return launch_moments<false>(tensors, count, dtype, true, stream, [&](auto tag) {
    return step_coeffs<OpMath<typename decltype(tag)::type>>(hyper, step);
  });
}

}  // namespace cuda
}  // namespace difopt_accel
