// CUDA kernels of the fused Adam step and its backward, for lists of tensors.
//
// A launch covers up to kMaxTensors tensors, passed by value in the kernel's parameters;
// each block handles kBlockElems consecutive elements of one tensor and finds which from a
// prefix sum of blocks per tensor. Half and bfloat16 are computed in float.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "adam_cuda.h"

namespace difopt_accel {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kItemsPerThread = 4;
constexpr int64_t kBlockElems = static_cast<int64_t>(kThreads) * kItemsPerThread;
constexpr int kMaxTensors = 24;

template <typename T>
struct OpMath {
  using type = T;
};
template <>
struct OpMath<__half> {
  using type = float;
};
template <>
struct OpMath<__nv_bfloat16> {
  using type = float;
};

__device__ __forceinline__ float load(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ double load(const double* p, int64_t i) { return p[i]; }

__device__ __forceinline__ void store(__half* p, int64_t i, float x) { p[i] = __float2half(x); }
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float x) {
  p[i] = __float2bfloat16(x);
}
__device__ __forceinline__ void store(float* p, int64_t i, float x) { p[i] = x; }
__device__ __forceinline__ void store(double* p, int64_t i, double x) { p[i] = x; }

template <typename Tensor>
struct Pack {
  Tensor tensors[kMaxTensors];
  int block_start[kMaxTensors + 1];  // prefix sum of blocks per tensor
  int count;
};

// The tensor of this block and the first element it handles.
template <typename Tensor>
__device__ __forceinline__ int locate(const Pack<Tensor>& pack, int64_t* begin) {
  const int block = static_cast<int>(blockIdx.x);
  int k = 0;
  while (k + 1 < pack.count && pack.block_start[k + 1] <= block) {
    ++k;
  }
  *begin = static_cast<int64_t>(block - pack.block_start[k]) * kBlockElems;
  return k;
}

template <typename Op>
__device__ __forceinline__ AdamCoeffs<Op> coeffs_for(const AdamCoeffs<Op>& host,
                                                     const AdamHyper& hyper, Step step) {
  return step.device == nullptr ? host : make_coeffs<Op>(hyper, *step.device);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    adam_forward_kernel(Pack<ForwardTensor> pack, AdamCoeffs<typename OpMath<T>::type> host,
                        AdamHyper hyper, Step step) {
  using Op = typename OpMath<T>::type;
  int64_t begin = 0;
  const ForwardTensor& t = pack.tensors[locate(pack, &begin)];
  const AdamCoeffs<Op> c = coeffs_for(host, hyper, step);
  const T* g = static_cast<const T*>(t.g);
  const T* mu = static_cast<const T*>(t.mu);
  const T* nu = static_cast<const T*>(t.nu);
  const T* base = static_cast<const T*>(t.base);
  T* out = static_cast<T*>(t.out);
  T* mu_out = static_cast<T*>(t.mu_out);
  T* nu_out = static_cast<T*>(t.nu_out);
  const int64_t end = begin + kBlockElems < t.numel ? begin + kBlockElems : t.numel;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    Op m, v, d;
    adam_forward<Op>(load(g, i), load(mu, i), load(nu, i), c, m, v, d);
    const Op b = base != nullptr ? load(base, i) : Op(0);
    store(out, i, b + c.factor * d);
    store(mu_out, i, m);
    store(nu_out, i, v);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    adam_backward_kernel(Pack<BackwardTensor> pack, AdamCoeffs<typename OpMath<T>::type> host,
                         AdamHyper hyper, Step step) {
  using Op = typename OpMath<T>::type;
  int64_t begin = 0;
  const BackwardTensor& t = pack.tensors[locate(pack, &begin)];
  const AdamCoeffs<Op> c = coeffs_for(host, hyper, step);
  const T* d_out = static_cast<const T*>(t.d_out);
  const T* d_mu_new = static_cast<const T*>(t.d_mu_new);
  const T* d_nu_new = static_cast<const T*>(t.d_nu_new);
  const T* g = static_cast<const T*>(t.g);
  const T* mu_new = static_cast<const T*>(t.mu_new);
  const T* nu_new = static_cast<const T*>(t.nu_new);
  T* d_g = static_cast<T*>(t.d_g);
  T* d_mu = static_cast<T*>(t.d_mu);
  T* d_nu = static_cast<T*>(t.d_nu);
  const int64_t end = begin + kBlockElems < t.numel ? begin + kBlockElems : t.numel;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    Op dg, dm, dv;
    adam_backward<Op>(load(g, i), load(mu_new, i), load(nu_new, i), load(d_out, i),
                      d_mu_new != nullptr ? load(d_mu_new, i) : Op(0),
                      d_nu_new != nullptr ? load(d_nu_new, i) : Op(0), c, dg, dm, dv);
    store(d_g, i, dg);
    if (d_mu != nullptr) {
      store(d_mu, i, dm);
      store(d_nu, i, dv);
    }
  }
}

// Packs the tensors into launches of at most kMaxTensors tensors (and a bounded grid).
template <typename T, typename Tensor, typename Kernel>
cudaError_t launch_packed(const Tensor* tensors, int64_t count, const AdamHyper& hyper,
                          Step step, cudaStream_t stream, Kernel kernel) {
  using Op = typename OpMath<T>::type;
  const AdamCoeffs<Op> host = make_coeffs<Op>(hyper, step.device == nullptr ? step.host : 1);
  constexpr int kMaxBlocks = 1 << 30;
  Pack<Tensor> pack;
  pack.count = 0;
  pack.block_start[0] = 0;
  auto flush = [&]() -> cudaError_t {
    if (pack.count == 0) {
      return cudaSuccess;
    }
    const int blocks = pack.block_start[pack.count];
    if (blocks > 0) {
      kernel<<<blocks, kThreads, 0, stream>>>(pack, host, hyper, step);
    }
    pack.count = 0;
    return cudaGetLastError();
  };
  for (int64_t k = 0; k < count; ++k) {
    const int64_t blocks = (tensors[k].numel + kBlockElems - 1) / kBlockElems;
    if (blocks == 0) {
      continue;
    }
    if (blocks > kMaxBlocks) {
      return cudaErrorInvalidValue;  // > 2^40 elements in one tensor
    }
    if (pack.count == kMaxTensors ||
        static_cast<int64_t>(pack.block_start[pack.count]) + blocks > kMaxBlocks) {
      const cudaError_t status = flush();
      if (status != cudaSuccess) {
        return status;
      }
      pack.block_start[0] = 0;
    }
    pack.tensors[pack.count] = tensors[k];
    pack.block_start[pack.count + 1] =
        pack.block_start[pack.count] + static_cast<int>(blocks);
    ++pack.count;
  }
  return flush();
}

}  // namespace

cudaError_t launch_adam_forward(const ForwardTensor* tensors, int64_t count, Dtype dtype,
                                const AdamHyper& hyper, Step step, cudaStream_t stream) {
  switch (dtype) {
    case Dtype::kFloat16:
      return launch_packed<__half>(tensors, count, hyper, step, stream,
                                   adam_forward_kernel<__half>);
    case Dtype::kBFloat16:
      return launch_packed<__nv_bfloat16>(tensors, count, hyper, step, stream,
                                          adam_forward_kernel<__nv_bfloat16>);
    case Dtype::kFloat32:
      return launch_packed<float>(tensors, count, hyper, step, stream,
                                  adam_forward_kernel<float>);
    case Dtype::kFloat64:
      return launch_packed<double>(tensors, count, hyper, step, stream,
                                   adam_forward_kernel<double>);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_adam_backward(const BackwardTensor* tensors, int64_t count, Dtype dtype,
                                 const AdamHyper& hyper, Step step, cudaStream_t stream) {
  switch (dtype) {
    case Dtype::kFloat16:
      return launch_packed<__half>(tensors, count, hyper, step, stream,
                                   adam_backward_kernel<__half>);
    case Dtype::kBFloat16:
      return launch_packed<__nv_bfloat16>(tensors, count, hyper, step, stream,
                                          adam_backward_kernel<__nv_bfloat16>);
    case Dtype::kFloat32:
      return launch_packed<float>(tensors, count, hyper, step, stream,
                                  adam_backward_kernel<float>);
    case Dtype::kFloat64:
      return launch_packed<double>(tensors, count, hyper, step, stream,
                                   adam_backward_kernel<double>);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace difopt_accel
