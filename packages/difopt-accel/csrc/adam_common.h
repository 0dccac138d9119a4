// Argument validation and the schema-level signatures shared by every device's kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>
#include <tuple>
#include <vector>

#include "adam_math.h"

namespace difopt_accel {

using TensorList = at::TensorList;
using TensorVector = std::vector<at::Tensor>;
using TensorVectors3 = std::tuple<TensorVector, TensorVector, TensorVector>;

// Which dtypes a device's kernels accept, for the error messages.
struct DtypePolicy {
  bool (*accepts)(at::ScalarType);
  const char* description;  // e.g. "float32 or float64"
};

// Checks the hyper-parameters (ValueError naming the argument on failure).
inline void check_hyper(const char* op, const AdamHyper& h) {
  TORCH_CHECK_VALUE(h.b1 >= 0.0 && h.b1 < 1.0, op, ": 'b1' must be in [0, 1), got ", h.b1);
  TORCH_CHECK_VALUE(h.b2 >= 0.0 && h.b2 < 1.0, op, ": 'b2' must be in [0, 1), got ", h.b2);
  TORCH_CHECK_VALUE(h.eps >= 0.0, op, ": 'eps' must be >= 0, got ", h.eps);
  TORCH_CHECK_VALUE(h.eps_root >= 0.0, op, ": 'eps_root' must be >= 0, got ", h.eps_root);
}

// Checks that `count` is the step number t >= 1 of this update, as a 0-d int64 tensor on
// the CPU or on `device` (a device counter is read by the kernel, never by the host).
inline void check_count(const char* op, const at::Tensor& count, const at::Device& device) {
  TORCH_CHECK_TYPE(count.dim() == 0 && count.scalar_type() == at::kLong, op,
                   ": 'count' must be a 0-d int64 tensor (the step number of this update), "
                   "got a ", count.dim(), "-d ", count.scalar_type(), " tensor");
  TORCH_CHECK(count.device().is_cpu() || count.device() == device, op,
              ": 'count' must be on the CPU or on ", device, ", got ", count.device());
}

// Checks the list `xs` (named `name`) against the reference list `ref`: same length, and
// every tensor with the same shape, dtype and device as its counterpart, contiguous.
inline void check_like(const char* op, const char* name, TensorList xs, const char* ref_name,
                       TensorList ref) {
  TORCH_CHECK_VALUE(xs.size() == ref.size(), op, ": '", name, "' has ", xs.size(),
                    " tensors but '", ref_name, "' has ", ref.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    const at::Tensor& x = xs[i];
    const at::Tensor& r = ref[i];
    TORCH_CHECK(x.defined(), op, ": '", name, "'[", i, "] is undefined");
    TORCH_CHECK_TYPE(x.scalar_type() == r.scalar_type(), op, ": '", name, "'[", i,
                     "] has dtype ", x.scalar_type(), " but '", ref_name, "'[", i, "] has ",
                     r.scalar_type());
    TORCH_CHECK(x.device() == r.device(), op, ": '", name, "'[", i, "] is on ", x.device(),
                " but '", ref_name, "'[", i, "] is on ", r.device());
    TORCH_CHECK_VALUE(x.sizes().equals(r.sizes()), op, ": '", name, "'[", i, "] has shape ",
                      x.sizes(), " but '", ref_name, "'[", i, "] has shape ", r.sizes());
    TORCH_CHECK(x.is_contiguous(), op, ": '", name, "'[", i,
                "] must be contiguous (got strides ", x.strides(),
                "); pass x.contiguous() instead");
  }
}

// Checks the reference list itself: dtype accepted by the device's kernels, on `device_type`,
// contiguous. Returns the device of the first tensor (or the count's when the list is empty).
inline at::Device check_reference(const char* op, const char* name, TensorList xs,
                                  at::DeviceType device_type, const DtypePolicy& dtypes,
                                  const at::Tensor& count) {
  const at::Device device = xs.empty() ? count.device() : xs[0].device();
  for (size_t i = 0; i < xs.size(); ++i) {
    const at::Tensor& x = xs[i];
    TORCH_CHECK(x.defined(), op, ": '", name, "'[", i, "] is undefined");
    TORCH_CHECK(x.device().type() == device_type && x.device() == device, op, ": '", name,
                "'[", i, "] is on ", x.device(), "; every tensor of one call must be on ",
                device);
    TORCH_CHECK_TYPE(dtypes.accepts(x.scalar_type()), op, ": '", name, "'[", i,
                     "] has dtype ", x.scalar_type(), "; the ", device_type,
                     " kernel supports ", dtypes.description);
    TORCH_CHECK(x.is_contiguous(), op, ": '", name, "'[", i,
                "] must be contiguous (got strides ", x.strides(),
                "); pass x.contiguous() instead");
  }
  return device;
}

// Validates the arguments of the forward ops: grads is the reference list; params may be
// empty (then the output is factor * direction).
inline at::Device check_forward(const char* op, TensorList grads, TensorList mu, TensorList nu,
                                TensorList params, const at::Tensor& count,
                                const AdamHyper& hyper, at::DeviceType device_type,
                                const DtypePolicy& dtypes) {
  check_hyper(op, hyper);
  const at::Device device = check_reference(op, "grads", grads, device_type, dtypes, count);
  check_like(op, "mu", mu, "grads", grads);
  check_like(op, "nu", nu, "grads", grads);
  if (!params.empty()) {
    check_like(op, "params", params, "grads", grads);
  }
  check_count(op, count, device);
  return device;
}

// Validates the arguments of the backward op: grads is the reference list; d_out is
// required, d_mu_new and d_nu_new are both given or both empty.
inline at::Device check_backward(const char* op, TensorList d_out, TensorList d_mu_new,
                                 TensorList d_nu_new, TensorList grads, TensorList mu_new,
                                 TensorList nu_new, const at::Tensor& count,
                                 const AdamHyper& hyper, at::DeviceType device_type,
                                 const DtypePolicy& dtypes) {
  check_hyper(op, hyper);
  const at::Device device = check_reference(op, "grads", grads, device_type, dtypes, count);
  check_like(op, "mu_new", mu_new, "grads", grads);
  check_like(op, "nu_new", nu_new, "grads", grads);
  check_like(op, "grad_out", d_out, "grads", grads);
  TORCH_CHECK_VALUE(d_mu_new.empty() == d_nu_new.empty(), op,
                    ": 'grad_mu' and 'grad_nu' must both be given or both be empty");
  if (!d_mu_new.empty()) {
    check_like(op, "grad_mu", d_mu_new, "grads", grads);
    check_like(op, "grad_nu", d_nu_new, "grads", grads);
  }
  check_count(op, count, device);
  return device;
}

// No two tensors written by an in-place call may share memory with each other.
inline void check_distinct_outputs(const char* op, TensorList out, TensorList mu,
                                   TensorList nu) {
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i].numel() == 0) {
      continue;
    }
    const void* o = out[i].data_ptr();
    TORCH_CHECK(o != mu[i].data_ptr() && o != nu[i].data_ptr() &&
                    mu[i].data_ptr() != nu[i].data_ptr(),
                op, ": 'out'[", i, "], 'mu'[", i, "] and 'nu'[", i,
                "] must not share memory");
  }
}

}  // namespace difopt_accel
