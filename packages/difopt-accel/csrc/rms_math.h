// Element-wise RMSProp arithmetic (uncentered and centered) shared by the CPU and CUDA
// kernels (no PyTorch dependency).
#pragma once

#include "math_common.h"

namespace difopt_accel {

// Hyper-parameters of one call, as passed by Python (double precision).
struct RmsHyper {
  double alpha;   // decay of the running averages
  double eps;     // added to the root
  double factor;  // the output is base + factor * direction
};

// The same scalars in the arithmetic type `T` of the kernel.
template <typename T>
struct RmsCoeffs {
  T alpha;  // weight of the previous averages
  T w;      // 1 - alpha, the weight of the update
  T eps;
  T factor;
};

template <typename T>
DIFOPT_HD RmsCoeffs<T> make_coeffs(const RmsHyper& h) {
  RmsCoeffs<T> c;
  c.alpha = static_cast<T>(h.alpha);
  c.w = static_cast<T>(1.0 - h.alpha);
  c.eps = static_cast<T>(h.eps);
  c.factor = static_cast<T>(h.factor);
  return c;
}

// One RMSProp step for one element:
//   nu'  = alpha nu + (1 - alpha) g^2
//   mu'  = lerp(mu, g, 1 - alpha)                    (centered only; mu is ignored otherwise)
//   dir  = g / (sqrt(nu') + eps)                     uncentered
//   dir  = g / (sqrt(nu' - mu'^2) + eps)             centered
template <typename T>
DIFOPT_HD void rms_forward(T g, T mu, T nu, const RmsCoeffs<T>& c, bool centered, T& mu_new,
                           T& nu_new, T& direction) {
  nu_new = ema_square(nu, g, c.alpha, c.w);
  mu_new = centered ? lerp(mu, g, c.w) : T(0);
  const T root = square_root(centered ? nu_new - mu_new * mu_new : nu_new);
  direction = g / (root + c.eps);
}

// The exact vector-Jacobian product of rms_forward (with out = base + factor * dir),
// recomputed from the input g and the saved outputs mu' (centered) and nu'. d_out, d_mu_new
// and d_nu_new are the incoming gradients; the results are the gradients of g, mu
// (centered) and nu. sqrt's derivative is 0 where its value is 0, as in the pure path.
template <typename T>
DIFOPT_HD void rms_backward(T g, T mu_new, T nu_new, T d_out, T d_mu_new, T d_nu_new,
                            const RmsCoeffs<T>& c, bool centered, T& d_g, T& d_mu, T& d_nu) {
  const T root = square_root(centered ? nu_new - mu_new * mu_new : nu_new);
  const T denom = root + c.eps;
  const T direction = g / denom;
  const T d_dir = c.factor * d_out;
  // d dir / d root = -dir / denom; the root's argument is nu' (minus mu'^2 when centered).
  const T g_arg = -d_dir * direction / denom * sqrt_derivative(root);
  const T g_nu = d_nu_new + g_arg;
  const T g_mu = centered ? d_mu_new - T(2) * mu_new * g_arg : T(0);
  d_g = d_dir / denom + T(2) * c.w * g * g_nu + c.w * g_mu;
  d_mu = c.alpha * g_mu;
  d_nu = c.alpha * g_nu;
}

// The two-moment interface (cpu_moments.h, moments_cuda.cuh) of RMSProp: the first moment
// takes part when centered.
template <typename T>
DIFOPT_HD void moments_forward(T g, T mu, T nu, const RmsCoeffs<T>& c, bool centered,
                               T& mu_new, T& nu_new, T& direction) {
  rms_forward(g, mu, nu, c, centered, mu_new, nu_new, direction);
}

template <typename T>
DIFOPT_HD void moments_backward(T g, T mu_new, T nu_new, T d_out, T d_mu_new, T d_nu_new,
                                const RmsCoeffs<T>& c, bool centered, T& d_g, T& d_mu,
                                T& d_nu) {
  rms_backward(g, mu_new, nu_new, d_out, d_mu_new, d_nu_new, c, centered, d_g, d_mu, d_nu);
}

}  // namespace difopt_accel
