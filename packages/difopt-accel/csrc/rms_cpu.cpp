// CPU kernels of the RMSProp operators (schemas in schemas.cpp, loops in cpu_moments.h,
// arithmetic in rms_math.h). mu takes part only when centered: the loops see it null
// otherwise.
#include <torch/library.h>

#include "cpu_moments.h"
#include "rms_common.h"

namespace difopt_accel {
namespace {

template <typename T>
using RmsForwardArgs = MomentsForwardArgs<T, RmsCoeffs<T>>;
template <typename T>
using RmsBackwardArgs = MomentsBackwardArgs<T, RmsCoeffs<T>>;

DIFOPT_CPU_ENTRY_POINTS(rms_forward_chunk, RmsForwardArgs, MomentsForwardLoop)
DIFOPT_CPU_ENTRY_POINTS(rms_backward_chunk, RmsBackwardArgs, MomentsBackwardLoop)

// Applies the forward step: reads grads/mu/nu/base, writes out/mu_out/nu_out (which may be
// the same tensors as mu/nu/base for the in-place op). mu and mu_out are empty unless
// centered.
void forward_all(TensorList grads, TensorList mu, TensorList nu, TensorList base,
                 TensorList out, TensorList mu_out, TensorList nu_out, const RmsHyper& hyper) {
  for_each_typed_chunk(grads, [&](auto zero, const Chunk& ch) {
    using T = decltype(zero);
    rms_forward_chunk(moments_forward_args<T>(ch, grads, mu, nu, base, out, mu_out, nu_out,
                                              make_coeffs<T>(hyper)));
  });
}

// difopt_accel::rms (functional): returns (out, mu_new, nu_new); mu_new is empty unless
// centered.
TensorVectors3 rms_cpu(TensorList grads, TensorList mu, TensorList nu, TensorList params,
                       double alpha, double eps, double factor, bool centered) {
  const char* op = "difopt_accel::rms";
  const RmsHyper hyper{alpha, eps, factor};
  check_rms_forward(op, grads, mu, nu, params, hyper, centered, at::kCPU, kCpuDtypes);
  TensorVector out = empty_like_all(grads);
  TensorVector mu_new = empty_like_all(mu);
  TensorVector nu_new = empty_like_all(nu);
  forward_all(grads, mu, nu, params, out, mu_new, nu_new, hyper);
  return {std::move(out), std::move(mu_new), std::move(nu_new)};
}

// difopt_accel::rms_ (in place): mu (centered) and nu are updated; out = out + factor * dir
// when accumulate, else out = factor * dir.
void rms_inplace_cpu(TensorList out, TensorList mu, TensorList nu, TensorList grads,
                     double alpha, double eps, double factor, bool centered, bool accumulate) {
  const char* op = "difopt_accel::rms_";
  const RmsHyper hyper{alpha, eps, factor};
  check_rms_forward(op, grads, mu, nu, {}, hyper, centered, at::kCPU, kCpuDtypes);
  check_like(op, "out", out, "grads", grads);
  check_distinct_outputs(op, {{"out", out}, {"mu", mu}, {"nu", nu}});
  forward_all(grads, mu, nu, accumulate ? out : TensorList(), out, mu, nu, hyper);
}

// difopt_accel::rms_backward: returns (d_grads, d_mu, d_nu); d_nu is empty unless
// moment_grads, d_mu unless moment_grads and centered.
TensorVectors3 rms_backward_cpu(TensorList grad_out, TensorList grad_mu, TensorList grad_nu,
                                TensorList grads, TensorList mu_new, TensorList nu_new,
                                double alpha, double eps, double factor, bool centered,
                                bool moment_grads) {
  const char* op = "difopt_accel::rms_backward";
  const RmsHyper hyper{alpha, eps, factor};
  check_rms_backward(op, grad_out, grad_mu, grad_nu, grads, mu_new, nu_new, hyper, centered,
                     at::kCPU, kCpuDtypes);
  TensorVector d_g = empty_like_all(grads);
  TensorVector d_mu = empty_like_if(moment_grads && centered, grads);
  TensorVector d_nu = empty_like_if(moment_grads, grads);
  for_each_typed_chunk(grads, [&](auto zero, const Chunk& ch) {
    using T = decltype(zero);
    rms_backward_chunk(moments_backward_args<T>(ch, grad_out, grad_mu, grad_nu, grads, mu_new,
                                                nu_new, d_g, d_mu, d_nu,
                                                make_coeffs<T>(hyper)));
  });
  return {std::move(d_g), std::move(d_mu), std::move(d_nu)};
}

}  // namespace

TORCH_LIBRARY_IMPL(difopt_accel, CPU, m) {
  m.impl("rms", &rms_cpu);
  m.impl("rms_", &rms_inplace_cpu);
  m.impl("rms_backward", &rms_backward_cpu);
}

}  // namespace difopt_accel
