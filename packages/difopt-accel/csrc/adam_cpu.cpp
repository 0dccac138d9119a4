// CPU kernels of the Adam operators (schemas in schemas.cpp, loops in cpu_moments.h,
// arithmetic in adam_math.h).
#include <torch/library.h>

#include "adam_common.h"
#include "cpu_moments.h"

namespace difopt_accel {
namespace {

template <typename T>
using AdamForwardArgs = MomentsForwardArgs<T, AdamCoeffs<T>>;
template <typename T>
using AdamBackwardArgs = MomentsBackwardArgs<T, AdamCoeffs<T>>;

DIFOPT_CPU_ENTRY_POINTS(adam_forward_chunk, AdamForwardArgs, MomentsForwardLoop)
DIFOPT_CPU_ENTRY_POINTS(adam_backward_chunk, AdamBackwardArgs, MomentsBackwardLoop)

// Applies the forward step: reads grads/mu/nu/base, writes out/mu_out/nu_out (which may be
// the same tensors as mu/nu/base for the in-place op).
void forward_all(TensorList grads, TensorList mu, TensorList nu, TensorList base,
                 TensorList out, TensorList mu_out, TensorList nu_out, int64_t step,
                 const AdamHyper& hyper) {
  for_each_typed_chunk(grads, [&](auto zero, const Chunk& ch) {
    using T = decltype(zero);
    adam_forward_chunk(moments_forward_args<T>(ch, grads, mu, nu, base, out, mu_out, nu_out,
                                               make_coeffs<T>(hyper, step)));
  });
}

// difopt_accel::adam (functional): returns (out, mu_new, nu_new).
TensorVectors3 adam_cpu(TensorList grads, TensorList mu, TensorList nu, TensorList params,
                        const at::Tensor& count, double b1, double b2, double eps,
                        double eps_root, double factor) {
  const char* op = "difopt_accel::adam";
  const AdamHyper hyper{b1, b2, eps, eps_root, factor};
  check_adam_forward(op, grads, mu, nu, params, count, hyper, at::kCPU, kCpuDtypes);
  const int64_t step = host_step(op, count);
  TensorVector out = empty_like_all(grads);
  TensorVector mu_new = empty_like_all(mu);
  TensorVector nu_new = empty_like_all(nu);
  forward_all(grads, mu, nu, params, out, mu_new, nu_new, step, hyper);
  return {std::move(out), std::move(mu_new), std::move(nu_new)};
}

// difopt_accel::adam_ (in place): mu and nu are updated; out = out + factor * dir when
// accumulate, else out = factor * dir.
void adam_inplace_cpu(TensorList out, TensorList mu, TensorList nu, TensorList grads,
                      const at::Tensor& count, double b1, double b2, double eps,
                      double eps_root, double factor, bool accumulate) {
  const char* op = "difopt_accel::adam_";
  const AdamHyper hyper{b1, b2, eps, eps_root, factor};
  check_adam_forward(op, grads, mu, nu, {}, count, hyper, at::kCPU, kCpuDtypes);
  check_like(op, "out", out, "grads", grads);
  check_distinct_outputs(op, {{"out", out}, {"mu", mu}, {"nu", nu}});
  const int64_t step = host_step(op, count);
  forward_all(grads, mu, nu, accumulate ? out : TensorList(), out, mu, nu, step, hyper);
}

// difopt_accel::adam_backward: returns (d_grads, d_mu, d_nu); the last two are empty
// unless moment_grads.
TensorVectors3 adam_backward_cpu(TensorList grad_out, TensorList grad_mu, TensorList grad_nu,
                                 TensorList grads, TensorList mu_new, TensorList nu_new,
                                 const at::Tensor& count, double b1, double b2, double eps,
                                 double eps_root, double factor, bool moment_grads) {
  const char* op = "difopt_accel::adam_backward";
  const AdamHyper hyper{b1, b2, eps, eps_root, factor};
  check_adam_backward(op, grad_out, grad_mu, grad_nu, grads, mu_new, nu_new, count, hyper,
                      at::kCPU, kCpuDtypes);
  const int64_t step = host_step(op, count);
  TensorVector d_g = empty_like_all(grads);
  TensorVector d_mu = empty_like_if(moment_grads, grads);
  TensorVector d_nu = empty_like_if(moment_grads, grads);
  for_each_typed_chunk(grads, [&](auto zero, const Chunk& ch) {
    using T = decltype(zero);
    adam_backward_chunk(moments_backward_args<T>(ch, grad_out, grad_mu, grad_nu, grads, mu_new,
                                                 nu_new, d_g, d_mu, d_nu,
                                                 make_coeffs<T>(hyper, step)));
  });
  return {std::move(d_g), std::move(d_mu), std::move(d_nu)};
}

}  // namespace

TORCH_LIBRARY_IMPL(difopt_accel, CPU, m) {
  m.impl("adam", &adam_cpu);
  m.impl("adam_", &adam_inplace_cpu);
  m.impl("adam_backward", &adam_backward_cpu);
}

}  // namespace difopt_accel
