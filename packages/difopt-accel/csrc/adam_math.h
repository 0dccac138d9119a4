// Element-wise Adam arithmetic shared by the CPU and CUDA kernels (no PyTorch dependency).
#pragma once

#include <cmath>
#include <cstdint>

#include "math_common.h"

namespace difopt_accel {

// Hyper-parameters of one call, as passed by Python (double precision).
struct AdamHyper {
  double b1;
  double b2;
  double eps;
  double eps_root;
  double factor;  // the output is base + factor * direction
};

// The scalars of step `t`, in the arithmetic type `T` of the kernel.
template <typename T>
struct AdamCoeffs {
  T b1;        // weight of the previous first moment
  T w1;        // 1 - b1, the lerp weight of the update in the first moment
  T b2;        // weight of the previous second moment
  T w2;        // 1 - b2
  T inv_bc1;   // 1 / (1 - b1^t)
  T inv_bc2;   // 1 / (1 - b2^t)
  T eps;
  T eps_root;
  T factor;
};

template <typename T>
DIFOPT_HD AdamCoeffs<T> make_coeffs(const AdamHyper& h, int64_t step) {
  const double t = static_cast<double>(step);
  AdamCoeffs<T> c;
  c.b1 = static_cast<T>(h.b1);
  c.w1 = static_cast<T>(1.0 - h.b1);
  c.b2 = static_cast<T>(h.b2);
  c.w2 = static_cast<T>(1.0 - h.b2);
  c.inv_bc1 = static_cast<T>(1.0 / (1.0 - pow(h.b1, t)));
  c.inv_bc2 = static_cast<T>(1.0 / (1.0 - pow(h.b2, t)));
  c.eps = static_cast<T>(h.eps);
  c.eps_root = static_cast<T>(h.eps_root);
  c.factor = static_cast<T>(h.factor);
  return c;
}

// One Adam step for one element:
//   mu'  = lerp(mu, g, 1 - b1)
//   nu'  = b2 nu + (1 - b2) g^2
//   dir  = (mu' / bc1) / (sqrt(nu' / bc2 + eps_root) + eps)
template <typename T>
DIFOPT_HD void adam_forward(T g, T mu, T nu, const AdamCoeffs<T>& c, T& mu_new, T& nu_new,
                            T& direction) {
  mu_new = lerp(mu, g, c.w1);
  nu_new = ema_square(nu, g, c.b2, c.w2);
  const T root = square_root(nu_new * c.inv_bc2 + c.eps_root);
  direction = (mu_new * c.inv_bc1) / (root + c.eps);
}

// The exact vector-Jacobian product of adam_forward (with out = base + factor * dir),
// recomputing the intermediates from the saved outputs mu', nu' and the input g.
// d_out, d_mu_new, d_nu_new are the incoming gradients; the results are the gradients of
// g, mu and nu. sqrt's derivative is taken as 0 where its value is 0 (the subgradient the
// pure path uses), which keeps meta-gradients finite where a second moment is exactly 0.
template <typename T>
DIFOPT_HD void adam_backward(T g, T mu_new, T nu_new, T d_out, T d_mu_new, T d_nu_new,
                             const AdamCoeffs<T>& c, T& d_g, T& d_mu, T& d_nu) {
  const T root = square_root(nu_new * c.inv_bc2 + c.eps_root);
  const T denom = root + c.eps;
  const T direction = (mu_new * c.inv_bc1) / denom;
  const T d_dir = c.factor * d_out;
  const T g_mu = d_mu_new + d_dir * c.inv_bc1 / denom;
  // d dir / d root = -dir / denom;  d root / d nu' = inv_bc2 sqrt'(root).
  const T g_nu = d_nu_new - d_dir * direction / denom * c.inv_bc2 * sqrt_derivative(root);
  d_g = c.w1 * g_mu + T(2) * c.w2 * g * g_nu;
  d_mu = (T(1) - c.w1) * g_mu;
  d_nu = c.b2 * g_nu;
}

// The two-moment interface (cpu_moments.h, moments_cuda.cuh) of Adam: its first moment
// always takes part.
template <typename T>
DIFOPT_HD void moments_forward(T g, T mu, T nu, const AdamCoeffs<T>& c, bool /*has_mu*/,
                               T& mu_new, T& nu_new, T& direction) {
  adam_forward(g, mu, nu, c, mu_new, nu_new, direction);
}

template <typename T>
DIFOPT_HD void moments_backward(T g, T mu_new, T nu_new, T d_out, T d_mu_new, T d_nu_new,
                                const AdamCoeffs<T>& c, bool /*has_mu*/, T& d_g, T& d_mu,
                                T& d_nu) {
  adam_backward(g, mu_new, nu_new, d_out, d_mu_new, d_nu_new, c, d_g, d_mu, d_nu);
}

}  // namespace difopt_accel
