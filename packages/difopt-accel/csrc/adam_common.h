// Argument validation of the Adam operators, shared by every device's kernels.
#pragma once

#include "adam_math.h"
#include "common.h"

namespace difopt_accel {

// Checks the hyper-parameters (ValueError naming the argument on failure).
inline void check_adam_hyper(const char* op, const AdamHyper& h) {
  check_unit_interval(op, "b1", h.b1, /*closed=*/false);
  check_unit_interval(op, "b2", h.b2, /*closed=*/false);
  check_non_negative(op, "eps", h.eps);
  check_non_negative(op, "eps_root", h.eps_root);
}

// Validates the arguments of the forward ops: grads is the reference list; params may be
// empty (then the output is factor * direction).
inline at::Device check_adam_forward(const char* op, TensorList grads, TensorList mu,
                                     TensorList nu, TensorList params, const at::Tensor& count,
                                     const AdamHyper& hyper, at::DeviceType device_type,
                                     const DtypePolicy& dtypes) {
  check_adam_hyper(op, hyper);
  const at::Device device =
      check_reference(op, "grads", grads, device_type, dtypes, count.device());
  check_like(op, "mu", mu, "grads", grads);
  check_like(op, "nu", nu, "grads", grads);
  check_optional_like(op, "params", params, "grads", grads);
  check_count(op, count, device);
  return device;
}

// Validates the arguments of the backward op: grads is the reference list; d_out is
// required, d_mu_new and d_nu_new are both given or both empty.
inline at::Device check_adam_backward(const char* op, TensorList d_out, TensorList d_mu_new,
                                      TensorList d_nu_new, TensorList grads, TensorList mu_new,
                                      TensorList nu_new, const at::Tensor& count,
                                      const AdamHyper& hyper, at::DeviceType device_type,
                                      const DtypePolicy& dtypes) {
  check_adam_hyper(op, hyper);
  const at::Device device =
      check_reference(op, "grads", grads, device_type, dtypes, count.device());
  check_like(op, "mu_new", mu_new, "grads", grads);
  check_like(op, "nu_new", nu_new, "grads", grads);
  check_like(op, "grad_out", d_out, "grads", grads);
  TORCH_CHECK_VALUE(d_mu_new.empty() == d_nu_new.empty(), op,
                    ": 'grad_mu' and 'grad_nu' must both be given or both be empty");
  check_optional_like(op, "grad_mu", d_mu_new, "grads", grads);
  check_optional_like(op, "grad_nu", d_nu_new, "grads", grads);
  check_count(op, count, device);
  return device;
}

}  // namespace difopt_accel
