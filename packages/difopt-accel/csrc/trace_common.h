// Argument validation of the momentum (trace) operators, shared by every device's kernels.
#pragma once

#include "common.h"
#include "trace_math.h"

namespace difopt_accel {

// Checks the hyper-parameters (ValueError naming the argument on failure).
inline void check_trace_hyper(const char* op, const TraceHyper& h) {
  check_non_negative(op, "momentum", h.momentum);
  check_unit_interval(op, "dampening", h.dampening, /*closed=*/true);
}

// Validates the arguments of the forward ops: grads is the reference list; params may be
// empty (then the output is factor * direction).
inline at::Device check_trace_forward(const char* op, TensorList grads, TensorList trace,
                                      TensorList params, const at::Tensor& count,
                                      const TraceHyper& hyper, at::DeviceType device_type,
                                      const DtypePolicy& dtypes) {
  check_trace_hyper(op, hyper);
  const at::Device device =
      check_reference(op, "grads", grads, device_type, dtypes, count.device());
  check_like(op, "trace", trace, "grads", grads);
  check_optional_like(op, "params", params, "grads", grads);
  check_count(op, count, device);
  return device;
}

// Validates the arguments of the backward op: grad_out is the reference list (the step is
// linear: nothing of the forward is needed but the step number); grad_trace may be empty.
inline at::Device check_trace_backward(const char* op, TensorList d_out, TensorList d_trace_new,
                                       const at::Tensor& count, const TraceHyper& hyper,
                                       at::DeviceType device_type, const DtypePolicy& dtypes) {
  check_trace_hyper(op, hyper);
  const at::Device device =
      check_reference(op, "grad_out", d_out, device_type, dtypes, count.device());
  check_optional_like(op, "grad_trace", d_trace_new, "grad_out", d_out);
  check_count(op, count, device);
  return device;
}

}  // namespace difopt_accel
