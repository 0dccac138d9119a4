// CUDA implementations of the RMSProp operators: argument checks, allocation, and the calls
// of the plain-CUDA launchers (rms_cuda.cu) on the current stream. Compiled only when the
// installed torch has CUDA.
#include <torch/library.h>

#include "cuda_glue.h"
#include "rms_common.h"
#include "rms_cuda.h"

namespace difopt_accel {
namespace {

using cuda_glue::kCudaDtypes;

void forward_all(const char* op, TensorList grads, TensorList mu, TensorList nu,
                 TensorList base, TensorList out, TensorList mu_out, TensorList nu_out,
                 const RmsHyper& hyper, bool centered, const at::Device& device) {
  cuda_glue::moments_forward_all(
      op, grads, mu, nu, base, out, mu_out, nu_out, device,
      [&](const cuda::ForwardTensor* tensors, int64_t n, cuda::Dtype dtype, cudaStream_t s) {
        return cuda::launch_rms_forward(tensors, n, dtype, hyper, centered, s);
      });
}

TensorVectors3 rms_cuda(TensorList grads, TensorList mu, TensorList nu, TensorList params,
                        double alpha, double eps, double factor, bool centered) {
  const char* op = "difopt_accel::rms";
  const RmsHyper hyper{alpha, eps, factor};
  const at::Device device =
      check_rms_forward(op, grads, mu, nu, params, hyper, centered, at::kCUDA, kCudaDtypes);
  TensorVector out = empty_like_all(grads);
  TensorVector mu_new = empty_like_all(mu);
  TensorVector nu_new = empty_like_all(nu);
  forward_all(op, grads, mu, nu, params, out, mu_new, nu_new, hyper, centered, device);
  return {std::move(out), std::move(mu_new), std::move(nu_new)};
}

void rms_inplace_cuda(TensorList out, TensorList mu, TensorList nu, TensorList grads,
                      double alpha, double eps, double factor, bool centered, bool accumulate) {
  const char* op = "difopt_accel::rms_";
  const RmsHyper hyper{alpha, eps, factor};
  const at::Device device =
      check_rms_forward(op, grads, mu, nu, {}, hyper, centered, at::kCUDA, kCudaDtypes);
  check_like(op, "out", out, "grads", grads);
  check_distinct_outputs(op, {{"out", out}, {"mu", mu}, {"nu", nu}});
  forward_all(op, grads, mu, nu, accumulate ? out : TensorList(), out, mu, nu, hyper, centered,
              device);
}

TensorVectors3 rms_backward_cuda(TensorList grad_out, TensorList grad_mu, TensorList grad_nu,
                                 TensorList grads, TensorList mu_new, TensorList nu_new,
                                 double alpha, double eps, double factor, bool centered,
                                 bool moment_grads) {
  const char* op = "difopt_accel::rms_backward";
  const RmsHyper hyper{alpha, eps, factor};
  const at::Device device = check_rms_backward(op, grad_out, grad_mu, grad_nu, grads, mu_new,
                                               nu_new, hyper, centered, at::kCUDA, kCudaDtypes);
  TensorVector d_g = empty_like_all(grads);
  TensorVector d_mu = empty_like_if(moment_grads && centered, grads);
  TensorVector d_nu = empty_like_if(moment_grads, grads);
  cuda_glue::moments_backward_all(
      op, grad_out, grad_mu, grad_nu, grads, mu_new, nu_new, d_g, d_mu, d_nu, device,
      [&](const cuda::BackwardTensor* tensors, int64_t n, cuda::Dtype dtype, cudaStream_t s) {
        return cuda::launch_rms_backward(tensors, n, dtype, hyper, centered, s);
      });
  return {std::move(d_g), std::move(d_mu), std::move(d_nu)};
}

}  // namespace

TORCH_LIBRARY_IMPL(difopt_accel, CUDA, m) {
  m.impl("rms", &rms_cuda);
  m.impl("rms_", &rms_inplace_cuda);
  m.impl("rms_backward", &rms_backward_cuda);
}

}  // namespace difopt_accel
