// CUDA kernels of the fused momentum (trace) step and its backward, for lists of tensors
// (launch machinery in multi_tensor.cuh, arithmetic in trace_math.h). Whether a step is the
// first comes from the step counter, read by each thread when it is on the device.
#include "multi_tensor.cuh"
#include "trace_cuda.h"

namespace difopt_accel {
namespace cuda {
namespace {

template <typename T, typename Source>
__global__ void __launch_bounds__(kThreads)
    trace_forward_kernel(Pack<TraceForwardTensor> pack, Source source) {
  using Op = OpMath<T>;
  const TraceCoeffs<Op> c = source.get();
  for_each_element(pack, [&](const TraceForwardTensor& t, int64_t i) {
    Op b, d;
    const Op buf = c.first ? Op(0) : load<T>(t.buf, i);
    trace_forward<Op>(load<T>(t.g, i), buf, c, c.first, c.nesterov, b, d);
    store<T>(t.out, i, onto_base<T>(t.base, i, c.factor, d));
    store<T>(t.buf_out, i, b);
  });
}

template <typename T, typename Source>
__global__ void __launch_bounds__(kThreads)
    trace_backward_kernel(Pack<TraceBackwardTensor> pack, Source source) {
  using Op = OpMath<T>;
  const TraceCoeffs<Op> c = source.get();
  for_each_element(pack, [&](const TraceBackwardTensor& t, int64_t i) {
    Op dg, db;
    trace_backward<Op>(load<T>(t.d_out, i), load<T>(t.d_buf_new, i), c, c.first, c.nesterov,
                       dg, db);
    store<T>(t.d_g, i, dg);
    store<T>(t.d_buf, i, db);
  });
}

template <typename T, typename Source>
constexpr auto trace_kernel(const TraceForwardTensor*) {
  return trace_forward_kernel<T, Source>;
}

template <typename T, typename Source>
constexpr auto trace_kernel(const TraceBackwardTensor*) {
  return trace_backward_kernel<T, Source>;
}

// Enqueues the forward or backward kernel (by the tensors' type) over the tensors.
template <typename Tensor>
cudaError_t launch(const Tensor* tensors, int64_t count, Dtype dtype, const TraceHyper& hyper,
                   Step step, cudaStream_t stream) {
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto source = step_coeffs<OpMath<T>>(hyper, step);
    const auto kernel = trace_kernel<T, std::decay_t<decltype(source)>>(tensors);
    return launch_packed(tensors, count, [&](const Pack<Tensor>& pack, int blocks) {
      kernel<<<blocks, kThreads, 0, stream>>>(pack, source);
    });
  });
}

}  // namespace

cudaError_t launch_trace_forward(const TraceForwardTensor* tensors, int64_t count, Dtype dtype,
                                 const TraceHyper& hyper, Step step, cudaStream_t stream) {
  return launch(tensors, count, dtype, hyper, step, stream);
}

cudaError_t launch_trace_backward(const TraceBackwardTensor* tensors, int64_t count,
                                  Dtype dtype, const TraceHyper& hyper, Step step,
                                  cudaStream_t stream) {
  return launch(tensors, count, dtype, hyper, step, stream);
}

}  // namespace cuda
}  // namespace difopt_accel
