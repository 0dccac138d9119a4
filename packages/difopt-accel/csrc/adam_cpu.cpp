// The difopt_accel operator schemas and their CPU kernels.
//
// One call handles a whole list of tensors: the elements of every tensor are cut into
// chunks, and one OpenMP loop runs over all chunks of all tensors, so small and large
// tensors share the threads evenly. The per-element arithmetic lives in adam_math.h; the
// loops below are plain contiguous loops the compiler vectorizes (built for AVX2 and a
// baseline target, picked at load time).
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "adam_common.h"

namespace difopt_accel {
namespace {

constexpr int64_t kChunk = 1 << 15;           // elements per unit of work
constexpr int64_t kParallelThreshold = 1 << 15;  // below this, one thread is faster

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define DIFOPT_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DIFOPT_VECTOR_CLONES
#endif
#if defined(__GNUC__)
// The loops must be inlined into each clone to be compiled for the clone's target.
#define DIFOPT_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define DIFOPT_ALWAYS_INLINE inline
#endif

// out[i] = base[i] + factor * dir  (base may alias out; no base: out = factor * dir).
// Outputs may alias inputs element for element (the in-place op), never across elements,
// which is what `omp simd` asserts; `c` is copied so no store can be assumed to change it.
template <typename T>
DIFOPT_ALWAYS_INLINE void forward_loop(int64_t n, const T* g, const T* mu, const T* nu, const T* base,
                         T* out, T* mu_out, T* nu_out, const AdamCoeffs<T>& coeffs) {
  const AdamCoeffs<T> c = coeffs;
  if (base != nullptr) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      T m, v, d;
      adam_forward(g[i], mu[i], nu[i], c, m, v, d);
      out[i] = base[i] + c.factor * d;
      mu_out[i] = m;
      nu_out[i] = v;
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      T m, v, d;
      adam_forward(g[i], mu[i], nu[i], c, m, v, d);
      out[i] = c.factor * d;
      mu_out[i] = m;
      nu_out[i] = v;
    }
  }
}

template <typename T, bool kStateGrads, bool kMomentGrads>
DIFOPT_ALWAYS_INLINE void backward_loop_impl(int64_t n, const T* d_out, const T* d_mu_new, const T* d_nu_new,
                               const T* g, const T* mu_new, const T* nu_new, T* d_g, T* d_mu,
                               T* d_nu, const AdamCoeffs<T>& coeffs) {
  const AdamCoeffs<T> c = coeffs;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    T dg, dm, dv;
    adam_backward(g[i], mu_new[i], nu_new[i], d_out[i], kStateGrads ? d_mu_new[i] : T(0),
                  kStateGrads ? d_nu_new[i] : T(0), c, dg, dm, dv);
    d_g[i] = dg;
    if constexpr (kMomentGrads) {
      d_mu[i] = dm;
      d_nu[i] = dv;
    }
  }
}

template <typename T>
DIFOPT_ALWAYS_INLINE void backward_loop(int64_t n, const T* d_out, const T* d_mu_new, const T* d_nu_new,
                          const T* g, const T* mu_new, const T* nu_new, T* d_g, T* d_mu,
                          T* d_nu, const AdamCoeffs<T>& c) {
  const bool state_grads = d_mu_new != nullptr;
  const bool moment_grads = d_mu != nullptr;
  if (state_grads && moment_grads) {
    backward_loop_impl<T, true, true>(n, d_out, d_mu_new, d_nu_new, g, mu_new, nu_new, d_g,
                                      d_mu, d_nu, c);
  } else if (state_grads) {
    backward_loop_impl<T, true, false>(n, d_out, d_mu_new, d_nu_new, g, mu_new, nu_new, d_g,
                                       d_mu, d_nu, c);
  } else if (moment_grads) {
    backward_loop_impl<T, false, true>(n, d_out, d_mu_new, d_nu_new, g, mu_new, nu_new, d_g,
                                       d_mu, d_nu, c);
  } else {
    backward_loop_impl<T, false, false>(n, d_out, d_mu_new, d_nu_new, g, mu_new, nu_new, d_g,
                                        d_mu, d_nu, c);
  }
}

// Non-template entry points, so that each can be compiled for several instruction sets.
DIFOPT_VECTOR_CLONES void forward_f32(int64_t n, const float* g, const float* mu,
                                      const float* nu, const float* base, float* out,
                                      float* mu_out, float* nu_out,
                                      const AdamCoeffs<float>& c) {
  forward_loop(n, g, mu, nu, base, out, mu_out, nu_out, c);
}

DIFOPT_VECTOR_CLONES void forward_f64(int64_t n, const double* g, const double* mu,
                                      const double* nu, const double* base, double* out,
                                      double* mu_out, double* nu_out,
                                      const AdamCoeffs<double>& c) {
  forward_loop(n, g, mu, nu, base, out, mu_out, nu_out, c);
}

DIFOPT_VECTOR_CLONES void backward_f32(int64_t n, const float* d_out, const float* d_mu_new,
                                       const float* d_nu_new, const float* g,
                                       const float* mu_new, const float* nu_new, float* d_g,
                                       float* d_mu, float* d_nu, const AdamCoeffs<float>& c) {
  backward_loop(n, d_out, d_mu_new, d_nu_new, g, mu_new, nu_new, d_g, d_mu, d_nu, c);
}

DIFOPT_VECTOR_CLONES void backward_f64(int64_t n, const double* d_out, const double* d_mu_new,
                                       const double* d_nu_new, const double* g,
                                       const double* mu_new, const double* nu_new,
                                       double* d_g, double* d_mu, double* d_nu,
                                       const AdamCoeffs<double>& c) {
  backward_loop(n, d_out, d_mu_new, d_nu_new, g, mu_new, nu_new, d_g, d_mu, d_nu, c);
}

inline void kernel(int64_t n, const float* g, const float* mu, const float* nu,
                   const float* base, float* out, float* mu_out, float* nu_out,
                   const AdamCoeffs<float>& c) {
  forward_f32(n, g, mu, nu, base, out, mu_out, nu_out, c);
}
inline void kernel(int64_t n, const double* g, const double* mu, const double* nu,
                   const double* base, double* out, double* mu_out, double* nu_out,
                   const AdamCoeffs<double>& c) {
  forward_f64(n, g, mu, nu, base, out, mu_out, nu_out, c);
}
inline void kernel(int64_t n, const float* d_out, const float* d_mu_new, const float* d_nu_new,
                   const float* g, const float* mu_new, const float* nu_new, float* d_g,
                   float* d_mu, float* d_nu, const AdamCoeffs<float>& c) {
  backward_f32(n, d_out, d_mu_new, d_nu_new, g, mu_new, nu_new, d_g, d_mu, d_nu, c);
}
inline void kernel(int64_t n, const double* d_out, const double* d_mu_new,
                   const double* d_nu_new, const double* g, const double* mu_new,
                   const double* nu_new, double* d_g, double* d_mu, double* d_nu,
                   const AdamCoeffs<double>& c) {
  backward_f64(n, d_out, d_mu_new, d_nu_new, g, mu_new, nu_new, d_g, d_mu, d_nu, c);
}

bool cpu_dtype(at::ScalarType t) { return t == at::kFloat || t == at::kDouble; }
const DtypePolicy kCpuDtypes{cpu_dtype, "float32 and float64"};

// A contiguous range [begin, end) of the elements of tensor `index`.
struct Chunk {
  int64_t index;
  int64_t begin;
  int64_t end;
};

std::vector<Chunk> make_chunks(TensorList ref, int64_t* total) {
  std::vector<Chunk> chunks;
  *total = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const int64_t n = ref[i].numel();
    *total += n;
    for (int64_t b = 0; b < n; b += kChunk) {
      chunks.push_back({static_cast<int64_t>(i), b, std::min(n, b + kChunk)});
    }
  }
  return chunks;
}

// Runs body(chunk) over every chunk, in parallel when the work is large enough and the
// caller is not already inside a parallel region. The thread count is torch's
// (torch.set_num_threads), which shares the OpenMP runtime torch itself loads.
template <typename Body>
void for_each_chunk(const std::vector<Chunk>& chunks, int64_t total, const Body& body) {
  const int64_t count = static_cast<int64_t>(chunks.size());
#if defined(_OPENMP)
  const int threads = at::get_num_threads();
  if (total >= kParallelThreshold && threads > 1 && count > 1 && !at::in_parallel_region()) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t k = 0; k < count; ++k) {
      body(chunks[k]);
    }
    return;
  }
#endif
  (void)total;
  for (int64_t k = 0; k < count; ++k) {
    body(chunks[k]);
  }
}

template <typename T>
const T* ptr_or_null(TensorList xs, int64_t i) {
  return xs.empty() ? nullptr : xs[i].const_data_ptr<T>();
}

template <typename T>
T* mutable_ptr_or_null(TensorList xs, int64_t i) {
  return xs.empty() ? nullptr : xs[i].mutable_data_ptr<T>();
}

// Applies the forward step: reads grads/mu/nu/base, writes out/mu_out/nu_out (which may be
// the same tensors as mu/nu/base for the in-place op).
void forward_all(TensorList grads, TensorList mu, TensorList nu, TensorList base,
                 TensorList out, TensorList mu_out, TensorList nu_out, int64_t step,
                 const AdamHyper& hyper) {
  const AdamCoeffs<float> c32 = make_coeffs<float>(hyper, step);
  const AdamCoeffs<double> c64 = make_coeffs<double>(hyper, step);
  int64_t total = 0;
  const std::vector<Chunk> chunks = make_chunks(grads, &total);
  for_each_chunk(chunks, total, [&](const Chunk& ch) {
    const int64_t i = ch.index;
    const int64_t b = ch.begin;
    const int64_t n = ch.end - ch.begin;
    if (grads[i].scalar_type() == at::kFloat) {
      const float* base_ptr = ptr_or_null<float>(base, i);
      kernel(n, grads[i].const_data_ptr<float>() + b, mu[i].const_data_ptr<float>() + b,
             nu[i].const_data_ptr<float>() + b, base_ptr ? base_ptr + b : nullptr,
             out[i].mutable_data_ptr<float>() + b, mu_out[i].mutable_data_ptr<float>() + b,
             nu_out[i].mutable_data_ptr<float>() + b, c32);
    } else {
      const double* base_ptr = ptr_or_null<double>(base, i);
      kernel(n, grads[i].const_data_ptr<double>() + b, mu[i].const_data_ptr<double>() + b,
             nu[i].const_data_ptr<double>() + b, base_ptr ? base_ptr + b : nullptr,
             out[i].mutable_data_ptr<double>() + b, mu_out[i].mutable_data_ptr<double>() + b,
             nu_out[i].mutable_data_ptr<double>() + b, c64);
    }
  });
}

TensorVector empty_like_all(TensorList xs) {
  TensorVector out;
  out.reserve(xs.size());
  for (const at::Tensor& x : xs) {
    out.push_back(at::empty_like(x, at::MemoryFormat::Contiguous));
  }
  return out;
}

// difopt_accel::adam (functional): returns (out, mu_new, nu_new).
TensorVectors3 adam_cpu(TensorList grads, TensorList mu, TensorList nu, TensorList params,
                        const at::Tensor& count, double b1, double b2, double eps,
                        double eps_root, double factor) {
  const char* op = "difopt_accel::adam";
  const AdamHyper hyper{b1, b2, eps, eps_root, factor};
  check_forward(op, grads, mu, nu, params, count, hyper, at::kCPU, kCpuDtypes);
  const int64_t step = count.item<int64_t>();
  TORCH_CHECK_VALUE(step >= 1, op, ": 'count' must be >= 1 (the step number), got ", step);
  TensorVector out = empty_like_all(grads);
  TensorVector mu_new = empty_like_all(mu);
  TensorVector nu_new = empty_like_all(nu);
  forward_all(grads, mu, nu, params, out, mu_new, nu_new, step, hyper);
  return {std::move(out), std::move(mu_new), std::move(nu_new)};
}

// difopt_accel::adam_ (in place): mu and nu are updated; out = out + factor * dir when
// accumulate, else out = factor * dir.
void adam_inplace_cpu(TensorList out, TensorList mu, TensorList nu, TensorList grads,
                      const at::Tensor& count, double b1, double b2, double eps,
                      double eps_root, double factor, bool accumulate) {
  const char* op = "difopt_accel::adam_";
  const AdamHyper hyper{b1, b2, eps, eps_root, factor};
  check_forward(op, grads, mu, nu, {}, count, hyper, at::kCPU, kCpuDtypes);
  check_like(op, "out", out, "grads", grads);
  check_distinct_outputs(op, out, mu, nu);
  const int64_t step = count.item<int64_t>();
  TORCH_CHECK_VALUE(step >= 1, op, ": 'count' must be >= 1 (the step number), got ", step);
  forward_all(grads, mu, nu, accumulate ? out : TensorList(), out, mu, nu, step, hyper);
}

// difopt_accel::adam_backward: returns (d_grads, d_mu, d_nu); the last two are empty
// unless moment_grads.
TensorVectors3 adam_backward_cpu(TensorList grad_out, TensorList grad_mu, TensorList grad_nu,
                                 TensorList grads, TensorList mu_new, TensorList nu_new,
                                 const at::Tensor& count, double b1, double b2, double eps,
                                 double eps_root, double factor, bool moment_grads) {
  const char* op = "difopt_accel::adam_backward";
  const AdamHyper hyper{b1, b2, eps, eps_root, factor};
  check_backward(op, grad_out, grad_mu, grad_nu, grads, mu_new, nu_new, count, hyper,
                 at::kCPU, kCpuDtypes);
  const int64_t step = count.item<int64_t>();
  TORCH_CHECK_VALUE(step >= 1, op, ": 'count' must be >= 1 (the step number), got ", step);
  TensorVector d_g = empty_like_all(grads);
  TensorVector d_mu = moment_grads ? empty_like_all(grads) : TensorVector();
  TensorVector d_nu = moment_grads ? empty_like_all(grads) : TensorVector();
  const AdamCoeffs<float> c32 = make_coeffs<float>(hyper, step);
  const AdamCoeffs<double> c64 = make_coeffs<double>(hyper, step);
  int64_t total = 0;
  const std::vector<Chunk> chunks = make_chunks(grads, &total);
  for_each_chunk(chunks, total, [&](const Chunk& ch) {
    const int64_t i = ch.index;
    const int64_t b = ch.begin;
    const int64_t n = ch.end - ch.begin;
    auto at_offset = [b](auto* p) { return p ? p + b : p; };
    if (grads[i].scalar_type() == at::kFloat) {
      kernel(n, grad_out[i].const_data_ptr<float>() + b,
             at_offset(ptr_or_null<float>(grad_mu, i)), at_offset(ptr_or_null<float>(grad_nu, i)),
             grads[i].const_data_ptr<float>() + b, mu_new[i].const_data_ptr<float>() + b,
             nu_new[i].const_data_ptr<float>() + b, d_g[i].mutable_data_ptr<float>() + b,
             at_offset(mutable_ptr_or_null<float>(d_mu, i)),
             at_offset(mutable_ptr_or_null<float>(d_nu, i)), c32);
    } else {
      kernel(n, grad_out[i].const_data_ptr<double>() + b,
             at_offset(ptr_or_null<double>(grad_mu, i)),
             at_offset(ptr_or_null<double>(grad_nu, i)), grads[i].const_data_ptr<double>() + b,
             mu_new[i].const_data_ptr<double>() + b, nu_new[i].const_data_ptr<double>() + b,
             d_g[i].mutable_data_ptr<double>() + b,
             at_offset(mutable_ptr_or_null<double>(d_mu, i)),
             at_offset(mutable_ptr_or_null<double>(d_nu, i)), c64);
    }
  });
  return {std::move(d_g), std::move(d_mu), std::move(d_nu)};
}

}  // namespace

TORCH_LIBRARY(difopt_accel, m) {
  m.def(
      "adam(Tensor[] grads, Tensor[] mu, Tensor[] nu, Tensor[] params, Tensor count, "
      "float b1, float b2, float eps, float eps_root, float factor) "
      "-> (Tensor[], Tensor[], Tensor[])");
  m.def(
      "adam_(Tensor(a!)[] out, Tensor(b!)[] mu, Tensor(c!)[] nu, Tensor[] grads, "
      "Tensor count, float b1, float b2, float eps, float eps_root, float factor, "
      "bool accumulate) -> ()");
  m.def(
      "adam_backward(Tensor[] grad_out, Tensor[] grad_mu, Tensor[] grad_nu, Tensor[] grads, "
      "Tensor[] mu_new, Tensor[] nu_new, Tensor count, float b1, float b2, float eps, "
      "float eps_root, float factor, bool moment_grads) -> (Tensor[], Tensor[], Tensor[])");
}

TORCH_LIBRARY_IMPL(difopt_accel, CPU, m) {
  m.impl("adam", &adam_cpu);
  m.impl("adam_", &adam_inplace_cpu);
  m.impl("adam_backward", &adam_backward_cpu);
}

}  // namespace difopt_accel
