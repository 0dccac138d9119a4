// CUDA kernels of the fused RMSProp step (uncentered and centered) and its backward, for
// lists of tensors (the kernels of moments_cuda.cuh over the arithmetic of rms_math.h).
#include "moments_cuda.cuh"
#include "rms_cuda.h"

namespace difopt_accel {
namespace cuda {

cudaError_t launch_rms_forward(const ForwardTensor* tensors, int64_t count, Dtype dtype,
                               const RmsHyper& hyper, bool centered, cudaStream_t stream) {
  return launch_moments<true>(tensors, count, dtype, centered, stream, [&](auto tag) {
    using Op = OpMath<typename decltype(tag)::type>;
    return FixedCoeffs<RmsCoeffs<Op>>{make_coeffs<Op>(hyper)};
  });
}

cudaError_t launch_rms_backward(const BackwardTensor* tensors, int64_t count, Dtype dtype,
                                const RmsHyper& hyper, bool centered, cudaStream_t stream) {
  return launch_moments<true>(tensors, count, dtype, centered, stream, [&](auto tag) {
    using Op = OpMath<typename decltype(tag)::type>;
    return FixedCoeffs<RmsCoeffs<Op>>{make_coeffs<Op>(hyper)};
  });
}

}  // namespace cuda
}  // namespace difopt_accel
