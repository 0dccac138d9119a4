// Element-wise heavy-ball momentum (difopt.transform.trace) shared by the CPU and CUDA
// kernels (no PyTorch dependency).
#pragma once

#include <cstdint>

#include "math_common.h"

namespace difopt_accel {

// Hyper-parameters of one call, as passed by Python (double precision).
struct TraceHyper {
  double momentum;
  double dampening;
  bool nesterov;
  double factor;  // the output is base + factor * direction
};

// The same scalars in the arithmetic type `T` of the kernel, for one step.
template <typename T>
struct TraceCoeffs {
  T momentum;  // weight of the previous buffer
  T w;         // 1 - dampening, the weight of the update
  T factor;
  bool nesterov;
  bool first;  // the first step (step number 1): the buffer starts as the update
};

template <typename T>
DIFOPT_HD TraceCoeffs<T> make_coeffs(const TraceHyper& h, int64_t step) {
  TraceCoeffs<T> c;
  c.momentum = static_cast<T>(h.momentum);
  c.w = static_cast<T>(1.0 - h.dampening);
  c.factor = static_cast<T>(h.factor);
  c.nesterov = h.nesterov;
  c.first = step == 1;
  return c;
}

// One momentum step for one element:
//   buf' = g                                        on the first step
//   buf' = momentum buf + (1 - dampening) g         afterwards
//   dir  = g + momentum buf'  (nesterov)   or   buf'
// `first` and `nesterov` are passed apart from `c` so that CPU loops can make them constants.
template <typename T>
DIFOPT_HD void trace_forward(T g, T buf, const TraceCoeffs<T>& c, bool first, bool nesterov,
                             T& buf_new, T& direction) {
  buf_new = first ? g : fmadd(c.w, g, buf * c.momentum);  // buf * momentum, then add(alpha=w)
  direction = nesterov ? fmadd(c.momentum, buf_new, g) : buf_new;
}

// The exact vector-Jacobian product of trace_forward (with out = base + factor * dir). The
// step is linear, so it needs none of the forward's values: d_out and d_buf_new are the
// incoming gradients, the results the gradients of g and buf (0 on the first step).
template <typename T>
DIFOPT_HD void trace_backward(T d_out, T d_buf_new, const TraceCoeffs<T>& c, bool first,
                              bool nesterov, T& d_g, T& d_buf) {
  const T d_dir = c.factor * d_out;
  const T g_buf = d_buf_new + (nesterov ? c.momentum * d_dir : d_dir);
  d_g = (nesterov ? d_dir : T(0)) + (first ? g_buf : c.w * g_buf);
  d_buf = first ? T(0) : c.momentum * g_buf;
}

}  // namespace difopt_accel
