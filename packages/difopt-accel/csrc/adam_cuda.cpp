// CUDA implementations of the difopt_accel operators: argument checks, allocation, and the
// calls of the plain-CUDA launchers (adam_cuda.cu) on the current stream. Compiled only when
// the installed torch has CUDA.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <vector>

#include "adam_common.h"
#include "adam_cuda.h"

namespace difopt_accel {
namespace {

bool cuda_dtype(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble;
}
const DtypePolicy kCudaDtypes{cuda_dtype, "float16, bfloat16, float32 and float64"};

cuda::Dtype to_cuda_dtype(at::ScalarType t) {
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

const at::ScalarType kDtypes[] = {at::kHalf, at::kBFloat16, at::kFloat, at::kDouble};

// A CPU counter is read here (no device synchronisation); a device counter is passed to the
// kernels by address, so its value is never copied to the host.
cuda::Step step_of(const char* op, const at::Tensor& count) {
  if (count.is_cuda()) {
    return {0, count.const_data_ptr<int64_t>()};
  }
  const int64_t step = count.item<int64_t>();
  TORCH_CHECK_VALUE(step >= 1, op, ": 'count' must be >= 1 (the step number), got ", step);
  return {step, nullptr};
}

TensorVector empty_like_all(TensorList xs) {
  TensorVector out;
  out.reserve(xs.size());
  for (const at::Tensor& x : xs) {
    out.push_back(at::empty_like(x, at::MemoryFormat::Contiguous));
  }
  return out;
}

const void* data_or_null(TensorList xs, size_t i) {
  return xs.empty() ? nullptr : xs[i].const_data_ptr();
}

void* mutable_data_or_null(TensorList xs, size_t i) {
  return xs.empty() ? nullptr : xs[i].mutable_data_ptr();
}

void forward_all(const char* op, TensorList grads, TensorList mu, TensorList nu,
                 TensorList base, TensorList out, TensorList mu_out, TensorList nu_out,
                 cuda::Step step, const AdamHyper& hyper, const at::Device& device) {
  const c10::cuda::CUDAGuard guard(device);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(device.index()).stream();
  for (const at::ScalarType dtype : kDtypes) {  // one multi-tensor launch per dtype
    std::vector<cuda::ForwardTensor> tensors;
    for (size_t i = 0; i < grads.size(); ++i) {
      if (grads[i].scalar_type() != dtype) {
        continue;
      }
      tensors.push_back({grads[i].const_data_ptr(), mu[i].const_data_ptr(),
                         nu[i].const_data_ptr(), data_or_null(base, i),
                         out[i].mutable_data_ptr(), mu_out[i].mutable_data_ptr(),
                         nu_out[i].mutable_data_ptr(), grads[i].numel()});
    }
    if (tensors.empty()) {
      continue;
    }
    const cudaError_t status =
        cuda::launch_adam_forward(tensors.data(), static_cast<int64_t>(tensors.size()),
                                  to_cuda_dtype(dtype), hyper, step, stream);
    TORCH_CHECK(status == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(status));
  }
}

TensorVectors3 adam_cuda(TensorList grads, TensorList mu, TensorList nu, TensorList params,
                         const at::Tensor& count, double b1, double b2, double eps,
                         double eps_root, double factor) {
  const char* op = "difopt_accel::adam";
  const AdamHyper hyper{b1, b2, eps, eps_root, factor};
  const at::Device device =
      check_forward(op, grads, mu, nu, params, count, hyper, at::kCUDA, kCudaDtypes);
  const cuda::Step step = step_of(op, count);
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
      check_forward(op, grads, mu, nu, {}, count, hyper, at::kCUDA, kCudaDtypes);
  check_like(op, "out", out, "grads", grads);
  check_distinct_outputs(op, out, mu, nu);
  const cuda::Step step = step_of(op, count);
  forward_all(op, grads, mu, nu, accumulate ? out : TensorList(), out, mu, nu, step, hyper,
              device);
}

TensorVectors3 adam_backward_cuda(TensorList grad_out, TensorList grad_mu, TensorList grad_nu,
                                  TensorList grads, TensorList mu_new, TensorList nu_new,
                                  const at::Tensor& count, double b1, double b2, double eps,
                                  double eps_root, double factor, bool moment_grads) {
  const char* op = "difopt_accel::adam_backward";
  const AdamHyper hyper{b1, b2, eps, eps_root, factor};
  const at::Device device = check_backward(op, grad_out, grad_mu, grad_nu, grads, mu_new,
                                           nu_new, count, hyper, at::kCUDA, kCudaDtypes);
  const cuda::Step step = step_of(op, count);
  TensorVector d_g = empty_like_all(grads);
  TensorVector d_mu = moment_grads ? empty_like_all(grads) : TensorVector();
  TensorVector d_nu = moment_grads ? empty_like_all(grads) : TensorVector();
  const c10::cuda::CUDAGuard guard(device);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(device.index()).stream();
  for (const at::ScalarType dtype : kDtypes) {
    std::vector<cuda::BackwardTensor> tensors;
    for (size_t i = 0; i < grads.size(); ++i) {
      if (grads[i].scalar_type() != dtype) {
        continue;
      }
      tensors.push_back({grad_out[i].const_data_ptr(), data_or_null(grad_mu, i),
                         data_or_null(grad_nu, i), grads[i].const_data_ptr(),
                         mu_new[i].const_data_ptr(), nu_new[i].const_data_ptr(),
                         d_g[i].mutable_data_ptr(), mutable_data_or_null(d_mu, i),
                         mutable_data_or_null(d_nu, i), grads[i].numel()});
    }
    if (tensors.empty()) {
      continue;
    }
    const cudaError_t status =
        cuda::launch_adam_backward(tensors.data(), static_cast<int64_t>(tensors.size()),
                                   to_cuda_dtype(dtype), hyper, step, stream);
    TORCH_CHECK(status == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(status));
  }
  return {std::move(d_g), std::move(d_mu), std::move(d_nu)};
}

}  // namespace

TORCH_LIBRARY_IMPL(difopt_accel, CUDA, m) {
  m.impl("adam", &adam_cuda);
  m.impl("adam_", &adam_inplace_cuda);
  m.impl("adam_backward", &adam_backward_cuda);
}

}  // namespace difopt_accel
