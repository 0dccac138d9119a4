// What the operators of every device share: list types, argument validation, allocation.
//
// Every check runs before a kernel writes anything, and names the argument it rejects:
// ValueError for a bad value, length or shape, TypeError for a bad dtype, RuntimeError for a
// device mismatch or a non-contiguous tensor.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <initializer_list>
#include <tuple>
#include <utility>
#include <vector>

namespace difopt_accel {

using TensorList = at::TensorList;
using TensorVector = std::vector<at::Tensor>;
using TensorVectors2 = std::tuple<TensorVector, TensorVector>;
using TensorVectors3 = std::tuple<TensorVector, TensorVector, TensorVector>;

// Which dtypes a device's kernels accept, for the error messages.
struct DtypePolicy {
  bool (*accepts)(at::ScalarType);
  const char* description;  // e.g. "float32 and float64"
};

// `value` in [0, 1), or [0, 1] when `closed` (ValueError naming the argument otherwise).
inline void check_unit_interval(const char* op, const char* name, double value, bool closed) {
  TORCH_CHECK_VALUE(value >= 0.0 && (closed ? value <= 1.0 : value < 1.0), op, ": '", name,
                    "' must be in [0, 1", closed ? "]" : ")", ", got ", value);
}

// `value` finite and >= 0 (ValueError naming the argument otherwise).
inline void check_non_negative(const char* op, const char* name, double value) {
  TORCH_CHECK_VALUE(value >= 0.0 && std::isfinite(value), op, ": '", name,
                    "' must be a finite number >= 0, got ", value);
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

// The step number held by a CPU `count` (checked by check_count), which must be >= 1.
inline int64_t host_step(const char* op, const at::Tensor& count) {
  const int64_t step = count.item<int64_t>();
  TORCH_CHECK_VALUE(step >= 1, op, ": 'count' must be >= 1 (the step number), got ", step);
  return step;
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

// check_like for a list that may also be empty (an absent optional list).
inline void check_optional_like(const char* op, const char* name, TensorList xs,
                                const char* ref_name, TensorList ref) {
  if (!xs.empty()) {
    check_like(op, name, xs, ref_name, ref);
  }
}

// `xs` (named `name`) must be empty, as an argument that takes no part `why`.
inline void check_empty(const char* op, const char* name, TensorList xs, const char* why) {
  TORCH_CHECK_VALUE(xs.empty(), op, ": '", name, "' must be empty ", why, ", got ", xs.size(),
                    " tensors");
}

// check_like when `present`, else check_empty (e.g. the first moments of an uncentered
// RMSProp step).
inline void check_like_if(bool present, const char* op, const char* name, TensorList xs,
                          const char* ref_name, TensorList ref, const char* why) {
  if (present) {
    check_like(op, name, xs, ref_name, ref);
  } else {
    check_empty(op, name, xs, why);
  }
}

// Checks the reference list itself: dtype accepted by the device's kernels, on `device_type`,
// contiguous. Returns the device of the first tensor (`fallback` when the list is empty).
inline at::Device check_reference(const char* op, const char* name, TensorList xs,
                                  at::DeviceType device_type, const DtypePolicy& dtypes,
                                  const at::Device& fallback) {
  const at::Device device = xs.empty() ? fallback : xs[0].device();
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

// A list written by an in-place call, with its name.
using NamedList = std::pair<const char*, TensorList>;

// No two of the lists an in-place call writes (empty lists are skipped) may share memory at
// the same index: each element is read and written once, in a fixed order.
inline void check_distinct_outputs(const char* op, std::initializer_list<NamedList> outputs) {
  for (auto a = outputs.begin(); a != outputs.end(); ++a) {
    for (auto b = a + 1; b != outputs.end(); ++b) {
      if (a->second.empty() || b->second.empty()) {
        continue;
      }
      for (size_t i = 0; i < a->second.size(); ++i) {
        const at::Tensor& x = a->second[i];
        TORCH_CHECK(x.numel() == 0 || x.data_ptr() != b->second[i].data_ptr(), op, ": '",
                    a->first, "'[", i, "] and '", b->first, "'[", i,
                    "] must not share memory");
      }
    }
  }
}

// Fresh contiguous tensors like those of `xs`.
inline TensorVector empty_like_all(TensorList xs) {
  TensorVector out;
  out.reserve(xs.size());
  for (const at::Tensor& x : xs) {
    out.push_back(at::empty_like(x, at::MemoryFormat::Contiguous));
  }
  return out;
}

// empty_like_all when `wanted`, else an empty list.
inline TensorVector empty_like_if(bool wanted, TensorList xs) {
  return wanted ? empty_like_all(xs) : TensorVector();
}

}  // namespace difopt_accel
