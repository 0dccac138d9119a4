// CUDA implementations of the Adam operators: argument checks, allocation, and the calls of
// the plain-CUDA launchers (adam_cuda.cu) on the current stream. Compiled only when the
// installed torch has CUDA.
#include <torch/library.h>

#include "adam_common.h"
#include "adam_cuda.h"
#include "cuda_glue.h"

namespace difopt_accel {
namespace {

using cuda_glue::kCudaDtypes;

void forward_all(const char* op, TensorList grads, TensorList mu, TensorList nu,
                 TensorList base, TensorList out, TensorList mu_out, TensorList nu_out,
                 cuda::Step step, const AdamHyper& hyper, const at::Device& device) {
  cuda_glue::moments_forward_all(
      op, grads, mu, nu, base, out, mu_out, nu_out, device,
      [&](const cuda::ForwardTensor* tensors, int64_t n, cuda::Dtype dtype, cudaStream_t s) {
        return cuda::launch_adam_forward(tensors, n, dtype, hyper, step, s);
      });
}

TensorVectors3 adam_cuda(TensorList grads, TensorList mu, TensorList nu, TensorList params,
                         const at::Tensor& count, double b1, double b2, double eps,
                         double eps_root, double factor) {
  const char* op = "difopt_accel::adam";
  const AdamHyper hyper{b1, b2, eps, eps_root, factor};
  const at::Device device =
      check_adam_forward(op, grads, mu, nu, params, count, hyper, at::kCUDA, kCudaDtypes);
  const cuda::Step step = cuda_glue::step_of(op, count);
  TensorVector out = empty_like_all(grads);
  TensorVector mu_new = empty_like_all(mu);
  TensorVector nu_new = empty_like_all(nu);
  forward_all(op, grads, mu, nu, params, out, mu_new, nu_new, step, hyper, device);
  return {std::move(out), std::move(mu_new), std::move(nu_new)};
}

void adam_inplace_cuda(TensorList out, TensorList mu, TensorList nu, TensorList grads,
                       const at::Tensor& count, double b1, double b2, double eps,
                       double eps_root, double factor, bool accumulate) {
  const char* op = "difopt_accel::adam_";
  const AdamHyper hyper{b1, b2, eps, eps_root, factor};
  const at::Device device =
      check_adam_forward(op, grads, mu, nu, {}, count, hyper, at::kCUDA, kCudaDtypes);
  check_like(op, "out", out, "grads", grads);
  check_distinct_outputs(op, {{"out", out}, {"mu", mu}, {"nu", nu}});
  const cuda::Step step = cuda_glue::step_of(op, count);
  forward_all(op, grads, mu, nu, accumulate ? out : TensorList(), out, mu, nu, step, hyper,
              device);
}

TensorVectors3 adam_backward_cuda(TensorList grad_out, TensorList grad_mu, TensorList grad_nu,
                                  TensorList grads, TensorList mu_new, TensorList nu_new,
                                  const at::Tensor& count, double b1, double b2, double eps,
                                  double eps_root, double factor, bool moment_grads) {
  const char* op = "difopt_accel::adam_backward";
  const AdamHyper hyper{b1, b2, eps, eps_root, factor};
  const at::Device device = check_adam_backward(op, grad_out, grad_mu, grad_nu, grads, mu_new,
                                                nu_new, count, hyper, at::kCUDA, kCudaDtypes);
  const cuda::Step step = cuda_glue::step_of(op, count);
  TensorVector d_g = empty_like_all(grads);
  TensorVector d_mu = empty_like_if(moment_grads, grads);
  TensorVector d_nu = empty_like_if(moment_grads, grads);
  cuda_glue::moments_backward_all(
      op, grad_out, grad_mu, grad_nu, grads, mu_new, nu_new, d_g, d_mu, d_nu, device,
      [&](const cuda::BackwardTensor* tensors, int64_t n, cuda::Dtype dtype, cudaStream_t s) {
        return cuda::launch_adam_backward(tensors, n, dtype, hyper, step, s);
      });
  return {std::move(d_g), std::move(d_mu), std::move(d_nu)};
}

}  // namespace

TORCH_LIBRARY_IMPL(difopt_accel, CUDA, m) {
  m.impl("adam", &adam_cuda);
  m.impl("adam_", &adam_inplace_cuda);
  m.impl("adam_backward", &adam_backward_cuda);
}

}  // namespace difopt_accel
