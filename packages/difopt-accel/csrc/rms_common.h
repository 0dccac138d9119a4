// Argument validation of the RMSProp operators, shared by every device's kernels.
//
// `mu` (the running mean, and its gradients) takes part only when `centered`; otherwise it
// must be an empty list.
#pragma once

#include "common.h"
#include "rms_math.h"

namespace difopt_accel {

constexpr const char* kUncentered = "when 'centered' is false";

// Checks the hyper-parameters (ValueError naming the argument on failure).
inline void check_rms_hyper(const char* op, const RmsHyper& h) {
  check_unit_interval(op, "alpha", h.alpha, /*closed=*/true);
  check_non_negative(op, "eps", h.eps);
}

// Validates the arguments of the forward ops: grads is the reference list; params may be
// empty (then the output is factor * direction).
inline at::Device check_rms_forward(const char* op, TensorList grads, TensorList mu,
                                    TensorList nu, TensorList params, const RmsHyper& hyper,
                                    bool centered, at::DeviceType device_type,
                                    const DtypePolicy& dtypes) {
  check_rms_hyper(op, hyper);
  const at::Device device =
      check_reference(op, "grads", grads, device_type, dtypes, at::Device(device_type));
  check_like_if(centered, op, "mu", mu, "grads", grads, kUncentered);
  check_like(op, "nu", nu, "grads", grads);
  check_optional_like(op, "params", params, "grads", grads);
  return device;
}

// Validates the arguments of the backward op: grads is the reference list; d_out is
// required; d_nu_new may be empty (zero), and so may d_mu_new when centered, but then both.
inline at::Device check_rms_backward(const char* op, TensorList d_out, TensorList d_mu_new,
                                     TensorList d_nu_new, TensorList grads, TensorList mu_new,
                                     TensorList nu_new, const RmsHyper& hyper, bool centered,
                                     at::DeviceType device_type, const DtypePolicy& dtypes) {
  check_rms_hyper(op, hyper);
  const at::Device device =
      check_reference(op, "grads", grads, device_type, dtypes, at::Device(device_type));
  check_like_if(centered, op, "mu_new", mu_new, "grads", grads, kUncentered);
  check_like(op, "nu_new", nu_new, "grads", grads);
  check_like(op, "grad_out", d_out, "grads", grads);
  TORCH_CHECK_VALUE(!centered || d_mu_new.empty() == d_nu_new.empty(), op,
                    ": 'grad_mu' and 'grad_nu' must both be given or both be empty");
  if (centered) {
    check_optional_like(op, "grad_mu", d_mu_new, "grads", grads);
  } else {
    check_empty(op, "grad_mu", d_mu_new, kUncentered);
  }
  check_optional_like(op, "grad_nu", d_nu_new, "grads", grads);
  return device;
}

}  // namespace difopt_accel
