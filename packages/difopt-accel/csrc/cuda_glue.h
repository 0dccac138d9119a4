// What the PyTorch glue of every op's CUDA kernels shares (<op>_cuda.cpp, compiled only when
// the installed torch has CUDA): dtypes, the step counter, per-tensor descriptions for the
// plain-CUDA launchers, and the launch on the current stream.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <vector>

#include "common.h"
#include "cuda_types.h"

namespace difopt_accel {
namespace cuda_glue {

inline bool cuda_dtype(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble;
}
inline const DtypePolicy kCudaDtypes{cuda_dtype, "float16, bfloat16, float32 and float64"};

inline cuda::Dtype to_cuda_dtype(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return cuda::Dtype::kFloat16;
    case at::kBFloat16:
      return cuda::Dtype::kBFloat16;
    case at::kFloat:
      return cuda::Dtype::kFloat32;
    default:
      return cuda::Dtype::kFloat64;
  }
}

// A CPU counter is read here (no device synchronisation); a device counter is passed to the
// kernels by address, so its value is never copied to the host.
inline cuda::Step step_of(const char* op, const at::Tensor& count) {
  if (count.is_cuda()) {
    return {0, count.const_data_ptr<int64_t>()};
  }
  return {host_step(op, count), nullptr};
}

// xs[i]'s data, or null when the list is empty (an absent optional list).
inline const void* data_or_null(TensorList xs, size_t i) {
  return xs.empty() ? nullptr : xs[i].const_data_ptr();
}

inline void* mutable_data_or_null(TensorList xs, size_t i) {
  return xs.empty() ? nullptr : xs[i].mutable_data_ptr();
}

// Tensor i of a forward call of an op with two moments (Adam, RMSProp); see cuda_types.h.
inline cuda::ForwardTensor moments_forward_tensor(size_t i, TensorList g, TensorList mu,
                                                  TensorList nu, TensorList base,
                                                  TensorList out, TensorList mu_out,
                                                  TensorList nu_out) {
  return {g[i].const_data_ptr(),      data_or_null(mu, i),
          nu[i].const_data_ptr(),     data_or_null(base, i),
          out[i].mutable_data_ptr(),  mutable_data_or_null(mu_out, i),
          nu_out[i].mutable_data_ptr(), g[i].numel()};
}

// Tensor i of a backward call of such an op.
inline cuda::BackwardTensor moments_backward_tensor(size_t i, TensorList d_out,
                                                    TensorList d_mu_new, TensorList d_nu_new,
                                                    TensorList g, TensorList mu_new,
                                                    TensorList nu_new, TensorList d_g,
                                                    TensorList d_mu, TensorList d_nu) {
  return {d_out[i].const_data_ptr(),     data_or_null(d_mu_new, i),
          data_or_null(d_nu_new, i),     g[i].const_data_ptr(),
          data_or_null(mu_new, i),       nu_new[i].const_data_ptr(),
          d_g[i].mutable_data_ptr(),     mutable_data_or_null(d_mu, i),
          mutable_data_or_null(d_nu, i), g[i].numel()};
}

// Groups the tensors of one call by dtype (that of ref[i]) and, for each dtype present, calls
// launch(descriptions, n, dtype, stream) on the current stream of `device`, where
// describe(i) is the launcher's description of tensor i: one multi-tensor launch per dtype.
// Throws naming `op` when a launch fails.
template <typename Describe, typename Launch>
void launch_by_dtype(const char* op, TensorList ref, const at::Device& device,
                     const Describe& describe, const Launch& launch) {
  if (ref.empty()) {
    return;
  }
  using Tensor = decltype(describe(size_t(0)));
  const c10::cuda::CUDAGuard guard(device);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(device.index()).stream();
  for (const at::ScalarType dtype : {at::kHalf, at::kBFloat16, at::kFloat, at::kDouble}) {
    std::vector<Tensor> tensors;
    for (size_t i = 0; i < ref.size(); ++i) {
      if (ref[i].scalar_type() == dtype) {
        tensors.push_back(describe(i));
      }
    }
    if (tensors.empty()) {
      continue;
    }
    const cudaError_t status =
        launch(tensors.data(), static_cast<int64_t>(tensors.size()), to_cuda_dtype(dtype), stream);
    TORCH_CHECK(status == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(status));
  }
}

// Enqueues the forward step of an op with two moments (Adam, RMSProp) on its lists, with
// launch(descriptions, n, dtype, stream) calling the op's launcher.
template <typename Launch>
void moments_forward_all(const char* op, TensorList g, TensorList mu, TensorList nu,
                         TensorList base, TensorList out, TensorList mu_out, TensorList nu_out,
                         const at::Device& device, const Launch& launch) {
  launch_by_dtype(
      op, g, device,
      [&](size_t i) { return moments_forward_tensor(i, g, mu, nu, base, out, mu_out, nu_out); },
      launch);
}

// Enqueues the backward of such an op's step, as moments_forward_all does.
template <typename Launch>
void moments_backward_all(const char* op, TensorList d_out, TensorList d_mu_new,
                          TensorList d_nu_new, TensorList g, TensorList mu_new,
                          TensorList nu_new, TensorList d_g, TensorList d_mu, TensorList d_nu,
                          const at::Device& device, const Launch& launch) {
  launch_by_dtype(
      op, g, device,
      [&](size_t i) {
        return moments_backward_tensor(i, d_out, d_mu_new, d_nu_new, g, mu_new, nu_new, d_g,
                                       d_mu, d_nu);
      },
      launch);
}

}  // namespace cuda_glue
}  // namespace difopt_accel
