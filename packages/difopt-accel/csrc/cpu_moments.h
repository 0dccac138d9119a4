// The CPU loops of the ops whose state is two moments, mu and nu (Adam, and RMSProp, whose
// mu takes part only when centered), written once over the math overloads
// moments_forward / moments_backward (adam_math.h, rms_math.h) and the op's coefficients.
#pragma once

#include "cpu_common.h"

namespace difopt_accel {

// One chunk of a forward call: out = base + factor * dir (base may be null or alias out);
// mu_out and nu_out receive the new moments (they may alias mu and nu). mu and mu_out are
// null where the first moment takes no part.
template <typename T, typename Coeffs>
struct MomentsForwardArgs {
  int64_t n;
  const T* g;
  const T* mu;
  const T* nu;
  const T* base;
  T* out;
  T* mu_out;
  T* nu_out;
  Coeffs c;
};

// One chunk of a backward call; d_mu_new and d_nu_new may be null (zero), d_mu and d_nu may be
// null (not wanted); mu_new, d_mu_new and d_mu are null where the first moment takes no part.
template <typename T, typename Coeffs>
struct MomentsBackwardArgs {
  int64_t n;
  const T* d_out;
  const T* d_mu_new;
  const T* d_nu_new;
  const T* g;
  const T* mu_new;
  const T* nu_new;
  T* d_g;
  T* d_mu;
  T* d_nu;
  Coeffs c;
};

// Outputs may alias inputs element for element (the in-place ops), never across elements,
// which is what `omp simd` asserts; the coefficients are copied so no store can be assumed
// to change them.
struct MomentsForwardLoop {
  template <typename T, typename Coeffs>
  static DIFOPT_ALWAYS_INLINE void run(const MomentsForwardArgs<T, Coeffs>& a) {
    WithFlags<MomentsForwardLoop>::run(a, a.mu != nullptr, a.base != nullptr);
  }

  template <bool kMu, bool kBase, typename T, typename Coeffs>
  static DIFOPT_ALWAYS_INLINE void loop(const MomentsForwardArgs<T, Coeffs>& a) {
    const Coeffs c = a.c;
    const T *g = a.g, *mu = a.mu, *nu = a.nu, *base = a.base;
    T *out = a.out, *mu_out = a.mu_out, *nu_out = a.nu_out;
#pragma omp simd
    for (int64_t i = 0; i < a.n; ++i) {
      T m, v, d;
      moments_forward(g[i], kMu ? mu[i] : T(0), nu[i], c, kMu, m, v, d);
      out[i] = onto_base<kBase>(base, i, c.factor, d);
      if constexpr (kMu) {
        mu_out[i] = m;
      }
      nu_out[i] = v;
    }
  }
};

struct MomentsBackwardLoop {
  template <typename T, typename Coeffs>
  static DIFOPT_ALWAYS_INLINE void run(const MomentsBackwardArgs<T, Coeffs>& a) {
    WithFlags<MomentsBackwardLoop>::run(a, a.mu_new != nullptr, a.d_nu_new != nullptr,
                                        a.d_nu != nullptr);
  }

  template <bool kMu, bool kStateGrads, bool kMomentGrads, typename T, typename Coeffs>
  static DIFOPT_ALWAYS_INLINE void loop(const MomentsBackwardArgs<T, Coeffs>& a) {
    const Coeffs c = a.c;
    const T *d_out = a.d_out, *d_mu_new = a.d_mu_new, *d_nu_new = a.d_nu_new;
    const T *g = a.g, *mu_new = a.mu_new, *nu_new = a.nu_new;
    T *d_g = a.d_g, *d_mu = a.d_mu, *d_nu = a.d_nu;
#pragma omp simd
    for (int64_t i = 0; i < a.n; ++i) {
      T dg, dm, dv;
      moments_backward(g[i], kMu ? mu_new[i] : T(0), nu_new[i], d_out[i],
                       kMu && kStateGrads ? d_mu_new[i] : T(0),
                       kStateGrads ? d_nu_new[i] : T(0), c, kMu, dg, dm, dv);
      d_g[i] = dg;
      if constexpr (kMomentGrads) {
        if constexpr (kMu) {
          d_mu[i] = dm;
        }
        d_nu[i] = dv;
      }
    }
  }
};

// The forward arguments of one chunk of the lists (see MomentsForwardArgs).
template <typename T, typename Coeffs>
MomentsForwardArgs<T, Coeffs> moments_forward_args(const Chunk& ch, TensorList g, TensorList mu,
                                                   TensorList nu, TensorList base,
                                                   TensorList out, TensorList mu_out,
                                                   TensorList nu_out, const Coeffs& c) {
  return {ch.size(),         in_ptr<T>(g, ch),       in_ptr<T>(mu, ch),
          in_ptr<T>(nu, ch), in_ptr<T>(base, ch),    out_ptr<T>(out, ch),
          out_ptr<T>(mu_out, ch), out_ptr<T>(nu_out, ch), c};
}

// The backward arguments of one chunk of the lists (see MomentsBackwardArgs).
template <typename T, typename Coeffs>
MomentsBackwardArgs<T, Coeffs> moments_backward_args(const Chunk& ch, TensorList d_out,
                                                     TensorList d_mu_new, TensorList d_nu_new,
                                                     TensorList g, TensorList mu_new,
                                                     TensorList nu_new, TensorList d_g,
                                                     TensorList d_mu, TensorList d_nu,
                                                     const Coeffs& c) {
  return {ch.size(),
          in_ptr<T>(d_out, ch),
          in_ptr<T>(d_mu_new, ch),
          in_ptr<T>(d_nu_new, ch),
          in_ptr<T>(g, ch),
          in_ptr<T>(mu_new, ch),
          in_ptr<T>(nu_new, ch),
          out_ptr<T>(d_g, ch),
          out_ptr<T>(d_mu, ch),
          out_ptr<T>(d_nu, ch),
          c};
}

}  // namespace difopt_accel
