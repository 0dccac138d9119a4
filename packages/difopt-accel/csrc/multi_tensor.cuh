// Multi-tensor launches shared by the CUDA kernels of every op (included by <op>_cuda.cu only).
//
// A launch covers up to kMaxTensors tensors, passed by value in the kernel's parameters;
// each block handles kBlockElems consecutive elements of one tensor and finds which from a
// prefix sum of blocks per tensor. Half and bfloat16 are loaded into float, computed in
// float, and stored back rounded.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "cuda_types.h"
#include "math_common.h"

namespace difopt_accel {
namespace cuda {

constexpr int kThreads = 256;
constexpr int kItemsPerThread = 4;
constexpr int64_t kBlockElems = static_cast<int64_t>(kThreads) * kItemsPerThread;
constexpr int kMaxTensors = 24;

// The arithmetic type of storage type T.
template <typename T>
struct OpMathOf {
  using type = T;
};
template <>
struct OpMathOf<__half> {
  using type = float;
};
template <>
struct OpMathOf<__nv_bfloat16> {
  using type = float;
};
template <typename T>
using OpMath = typename OpMathOf<T>::type;

__device__ __forceinline__ float to_op(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_op(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_op(float x) { return x; }
__device__ __forceinline__ double to_op(double x) { return x; }

template <typename T>
__device__ __forceinline__ T from_op(OpMath<T> x);
template <>
__device__ __forceinline__ __half from_op<__half>(float x) {
  return __float2half(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_op<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}
template <>
__device__ __forceinline__ float from_op<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ double from_op<double>(double x) {
  return x;
}

// Element i of the T array at p, in the arithmetic type; `fallback` where p is null (an
// absent optional input).
template <typename T>
__device__ __forceinline__ OpMath<T> load(const void* p, int64_t i,
                                          OpMath<T> fallback = OpMath<T>(0)) {
  return p != nullptr ? to_op(static_cast<const T*>(p)[i]) : fallback;
}

// Stores x into element i of the T array at p; nothing where p is null (an output not
// wanted).
template <typename T>
__device__ __forceinline__ void store(void* p, int64_t i, OpMath<T> x) {
  if (p != nullptr) {
    static_cast<T*>(p)[i] = from_op<T>(x);
  }
}

// What the forward kernels write as the first output: base[i] + factor * dir with a base
// (rounded as the pure path's add(alpha=factor)), factor * dir where base is null.
template <typename T>
__device__ __forceinline__ OpMath<T> onto_base(const void* base, int64_t i, OpMath<T> factor,
                                               OpMath<T> direction) {
  return base != nullptr ? fmadd(factor, direction, load<T>(base, i)) : factor * direction;
}

// The tensors of one launch. `Tensor` is an op's description of one tensor (pointers and
// its `numel`).
template <typename Tensor>
struct Pack {
  Tensor tensors[kMaxTensors];
  int block_start[kMaxTensors + 1];  // prefix sum of blocks per tensor
  int count;
};

// Runs body(tensor, i) for each element i of the block's range of its tensor; each thread
// visits every kThreads-th element.
template <typename Tensor, typename Body>
__device__ __forceinline__ void for_each_element(const Pack<Tensor>& pack, const Body& body) {
  const int block = static_cast<int>(blockIdx.x);
  int k = 0;
  while (k + 1 < pack.count && pack.block_start[k + 1] <= block) {
    ++k;
  }
  const Tensor& t = pack.tensors[k];
  const int64_t begin = static_cast<int64_t>(block - pack.block_start[k]) * kBlockElems;
  const int64_t end = begin + kBlockElems < t.numel ? begin + kBlockElems : t.numel;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    body(t, i);
  }
}

// Packs `count` tensors into launches of at most kMaxTensors tensors (and a bounded grid) and
// calls launch(pack, blocks) for each, which enqueues the kernel with `blocks` blocks of
// kThreads threads. Returns the first error.
template <typename Tensor, typename Launch>
cudaError_t launch_packed(const Tensor* tensors, int64_t count, const Launch& launch) {
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
      launch(pack, blocks);
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
    pack.block_start[pack.count + 1] = pack.block_start[pack.count] + static_cast<int>(blocks);
    ++pack.count;
  }
  return flush();
}

// The coefficients of a step, as each thread gets them (source.get()): computed by the host
// when it knows the step number, else by each thread from the device counter, so that a
// device-resident counter is never read by the host. `Hyper` has a make_coeffs<Op>(hyper,
// step) overload (adam_math.h, trace_math.h).
template <typename Op, typename Hyper>
struct StepCoeffs {
  using Coeffs = decltype(make_coeffs<Op>(std::declval<Hyper>(), int64_t(1)));
  Coeffs host;
  Hyper hyper;
  Step step;

  __device__ __forceinline__ Coeffs get() const {
    return step.device == nullptr ? host : make_coeffs<Op>(hyper, *step.device);
  }
};

template <typename Op, typename Hyper>
StepCoeffs<Op, Hyper> step_coeffs(const Hyper& hyper, Step step) {
  return {make_coeffs<Op>(hyper, step.device == nullptr ? step.host : 1), hyper, step};
}

// Coefficients that do not depend on the step.
template <typename Coeffs>
struct FixedCoeffs {
  Coeffs c;

  __device__ __forceinline__ Coeffs get() const { return c; }
};

// A type carried as a value, for dispatch_dtype's callbacks.
template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>()) with T the storage type of `dtype`, and returns its result.
template <typename F>
cudaError_t dispatch_dtype(Dtype dtype, const F& f) {
  switch (dtype) {
    case Dtype::kFloat16:
      return f(TypeTag<__half>());
    case Dtype::kBFloat16:
      return f(TypeTag<__nv_bfloat16>());
    case Dtype::kFloat32:
      return f(TypeTag<float>());
    case Dtype::kFloat64:
      return f(TypeTag<double>());
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace difopt_accel
