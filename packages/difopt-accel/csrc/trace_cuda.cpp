// CUDA implementations of the momentum (trace) operators: argument checks, allocation, and
// the calls of the plain-CUDA launchers (trace_cuda.cu) on the current stream. Compiled only
// when the installed torch has CUDA.
#include <torch/library.h>

#include "cuda_glue.h"
#include "trace_common.h"
#include "trace_cuda.h"

namespace difopt_accel {
namespace {

using cuda_glue::data_or_null;
using cuda_glue::kCudaDtypes;
using cuda_glue::mutable_data_or_null;

void forward_all(const char* op, TensorList grads, TensorList buf, TensorList base,
                 TensorList out, TensorList buf_out, cuda::Step step, const TraceHyper& hyper,
                 const at::Device& device) {
  cuda_glue::launch_by_dtype(
      op, grads, device,
      [&](size_t i) {
        return cuda::TraceForwardTensor{grads[i].const_data_ptr(), buf[i].const_data_ptr(),
                                        data_or_null(base, i), out[i].mutable_data_ptr(),
                                        buf_out[i].mutable_data_ptr(), grads[i].numel()};
      },
      [&](const cuda::TraceForwardTensor* tensors, int64_t n, cuda::Dtype dtype,
          cudaStream_t s) {
        return cuda::launch_trace_forward(tensors, n, dtype, hyper, step, s);
      });
}

TensorVectors2 trace_cuda(TensorList grads, TensorList trace, TensorList params,
                          const at::Tensor& count, double momentum, double dampening,
                          bool nesterov, double factor) {
  const char* op = "difopt_accel::trace";
  const TraceHyper hyper{momentum, dampening, nesterov, factor};
  const at::Device device =
      check_trace_forward(op, grads, trace, params, count, hyper, at::kCUDA, kCudaDtypes);
  const cuda::Step step = cuda_glue::step_of(op, count);
  TensorVector out = empty_like_all(grads);
  TensorVector trace_new = empty_like_all(trace);
  forward_all(op, grads, trace, params, out, trace_new, step, hyper, device);
  return {std::move(out), std::move(trace_new)};
}

void trace_inplace_cuda(TensorList out, TensorList trace, TensorList grads,
                        const at::Tensor& count, double momentum, double dampening,
                        bool nesterov, double factor, bool accumulate) {
  const char* op = "difopt_accel::trace_";
  const TraceHyper hyper{momentum, dampening, nesterov, factor};
  const at::Device device =
      check_trace_forward(op, grads, trace, {}, count, hyper, at::kCUDA, kCudaDtypes);
  check_like(op, "out", out, "grads", grads);
  check_distinct_outputs(op, {{"out", out}, {"trace", trace}});
  const cuda::Step step = cuda_glue::step_of(op, count);
  forward_all(op, grads, trace, accumulate ? out : TensorList(), out, trace, step, hyper,
              device);
}

TensorVectors2 trace_backward_cuda(TensorList grad_out, TensorList grad_trace,
                                   const at::Tensor& count, double momentum, double dampening,
                                   bool nesterov, double factor, bool trace_grads) {
  const char* op = "difopt_accel::trace_backward";
  const TraceHyper hyper{momentum, dampening, nesterov, factor};
  const at::Device device =
      check_trace_backward(op, grad_out, grad_trace, count, hyper, at::kCUDA, kCudaDtypes);
  const cuda::Step step = cuda_glue::step_of(op, count);
  TensorVector d_g = empty_like_all(grad_out);
  TensorVector d_trace = empty_like_if(trace_grads, grad_out);
  cuda_glue::launch_by_dtype(
      op, grad_out, device,
      [&](size_t i) {
        return cuda::TraceBackwardTensor{grad_out[i].const_data_ptr(),
                                         data_or_null(grad_trace, i),
                                         d_g[i].mutable_data_ptr(),
                                         mutable_data_or_null(d_trace, i), grad_out[i].numel()};
      },
      [&](const cuda::TraceBackwardTensor* tensors, int64_t n, cuda::Dtype dtype,
          cudaStream_t s) {
        return cuda::launch_trace_backward(tensors, n, dtype, hyper, step, s);
      });
  return {std::move(d_g), std::move(d_trace)};
}

}  // namespace

TORCH_LIBRARY_IMPL(difopt_accel, CUDA, m) {
  m.impl("trace", &trace_cuda);
  m.impl("trace_", &trace_inplace_cuda);
  m.impl("trace_backward", &trace_backward_cuda);
}

}  // namespace difopt_accel
