// Element-wise helpers shared by the arithmetic of every op (adam_math.h, rms_math.h,
// trace_math.h).
//
// These headers have no PyTorch dependency, so the CUDA translation units can be compiled by
// nvcc alone. Each function handles one element; the kernels only decide which elements a
// thread visits.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define DIFOPT_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// Always inlined, so that each vectorized clone of a CPU loop gets its own copy.
#define DIFOPT_HD inline __attribute__((always_inline))
#else
#define DIFOPT_HD inline
#endif

namespace difopt_accel {

DIFOPT_HD float square_root(float x) {
#if defined(__CUDA_ARCH__)
  return sqrtf(x);
#else
  return std::sqrt(x);
#endif
}

DIFOPT_HD double square_root(double x) {
#if defined(__CUDA_ARCH__)
  return ::sqrt(x);
#else
  return std::sqrt(x);
#endif
}

// make_coeffs<T>(hyper[, step]): the scalars of an op's step in the arithmetic type T of a
// kernel, one overload per op (by its hyper-parameter type, in <op>_math.h). This declaration
// makes the name a template for generic code (multi_tensor.cuh), which finds the overloads by
// argument-dependent lookup.
template <typename T>
void make_coeffs();

// Rounding. The kernels are compiled without implicit contraction (-ffp-contract=off, nvcc
// -fmad=false), so every product and sum rounds on its own, as separate torch operations of
// the pure path do, and the fused multiply-adds below stand where the pure path's own torch
// kernels have one: lerp, addcmul, add with alpha (torch's vectorized CPU kernels use
// explicit fused multiply-adds there). Both paths then round alike, which matters where a
// result cancels (the centered variance nu - mu^2 of RMSProp).

// a * b + c, rounded once.
template <typename T>
DIFOPT_HD T fmadd(T a, T b, T c) {
#if defined(__CUDA_ARCH__)
  return fma(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// torch.lerp (the pure path's first moments): the form depends on which side of 1/2 the
// weight lies.
template <typename T>
DIFOPT_HD T lerp(T start, T end, T weight) {
  const T diff = end - start;
  // Both forms, then a select: a branch here would keep the CPU loops from vectorizing.
  const T from_start = fmadd(weight, diff, start);
  const T from_end = fmadd(weight - T(1), diff, end);
  return weight < T(0.5) ? from_start : from_end;
}

// decay * v + weight * x^2 as the pure path computes a second moment: v * decay, then
// addcmul(x, x, value=weight).
template <typename T>
DIFOPT_HD T ema_square(T v, T x, T decay, T weight) {
  return fmadd(weight * x, x, v * decay);
}

// The derivative of sqrt at the point where its value is `root`: 1 / (2 root), or 0 where
// root is 0 (difopt's zero subgradient of sqrt at 0, which keeps meta-gradients finite where
// a second moment is exactly 0). Written without a branch (a select of constants, then
// arithmetic) so that the loops calling it vectorize.
template <typename T>
DIFOPT_HD T sqrt_derivative(T root) {
  const T positive = root > T(0) ? T(1) : T(0);
  const T safe_root = root + (T(1) - positive);
  return positive / (T(2) * safe_root);
}

}  // namespace difopt_accel
