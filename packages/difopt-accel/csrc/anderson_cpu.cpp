// CPU kernel of the Anderson-acceleration step (schema in schemas.cpp): one call does what
// difopt-implicit's pure Anderson step does in about fifteen small tensor operations, sample
// by sample (a batch of independent fixed-point problems), without a graph.
//
// Per sample b, with the memory of the last m images f_j = z_j + g_j and residuals g_j held in
// slots of `images` and `residuals` (B, m, n) and their Gram matrix in `gram` (B, m, m):
//   1. the new pair goes into slot `slot`: images[b, slot] = z + g, residuals[b, slot] = g;
//   2. row and column `slot` of the Gram matrix over the first k slots: g_j . g;
//   3. the weights: (G G^T + ridge * s * I) y = 1 over the first k slots, s the mean of the
//      Gram matrix's diagonal (1 when it is not positive), alpha = y / sum(y): the minimiser of
//      |G^T alpha|^2 + ridge s |alpha|^2 subject to sum(alpha) = 1;
//   4. the output: sum_j alpha_j (f_j - (1 - damping) g_j), i.e. damping * sum alpha_j f_j +
//      (1 - damping) * sum alpha_j z_j. With k = 1 it is z + damping * g.
// The small solve (Gaussian elimination with partial pivoting) is done in double, the dot
// products and the mix in the tensors' dtype (as the pure step does). A singular system gives a non-finite output for that sample, as the
// pure step's torch.linalg.solve_ex does; the caller discards non-finite iterates.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

namespace difopt_accel {
namespace {

struct AndersonShape {
  int64_t batch, m, n, slot, k;
};

// Solves A y = 1 (A: k x k, row-major, overwritten) into y.
void solve_ones(std::vector<double>& A, std::vector<double>& y, int64_t k) {
  for (int64_t r = 0; r < k; ++r) y[r] = 1.0;
  for (int64_t c = 0; c < k; ++c) {
    int64_t pivot = c;
    for (int64_t r = c + 1; r < k; ++r) {
      if (std::abs(A[r * k + c]) > std::abs(A[pivot * k + c])) pivot = r;
    }
    if (pivot != c) {
      for (int64_t j = 0; j < k; ++j) std::swap(A[c * k + j], A[pivot * k + j]);
      std::swap(y[c], y[pivot]);
    }
    const double d = A[c * k + c];
    for (int64_t r = c + 1; r < k; ++r) {
      const double l = A[r * k + c] / d;
      for (int64_t j = c; j < k; ++j) A[r * k + j] -= l * A[c * k + j];
      y[r] -= l * y[c];
    }
  }
  for (int64_t r = k - 1; r >= 0; --r) {
    double s = y[r];
    for (int64_t j = r + 1; j < k; ++j) s -= A[r * k + j] * y[j];
    y[r] = s / A[r * k + r];
  }
}

template <typename T>
void anderson_samples(T* images, T* residuals, T* gram, const T* z, const T* g, T* out,
                      const AndersonShape& s, double ridge, double damping, int64_t begin,
                      int64_t end) {
  const int64_t m = s.m, n = s.n, k = s.k, slot = s.slot;
  std::vector<double> A(k * k), y(k);
  for (int64_t b = begin; b < end; ++b) {
    T* F = images + b * m * n;
    T* G = residuals + b * m * n;
    T* GG = gram + b * m * m;
    const T* zb = z + b * n;
    const T* gb = g + b * n;
    T* ob = out + b * n;
    T* Fs = F + slot * n;
    T* Gs = G + slot * n;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      Fs[i] = zb[i] + gb[i];
      Gs[i] = gb[i];
    }
    for (int64_t j = 0; j < k; ++j) {
      const T* Gj = G + j * n;
      T dot = T(0);
#pragma omp simd reduction(+ : dot)
      for (int64_t i = 0; i < n; ++i) dot += Gj[i] * gb[i];
      GG[slot * m + j] = dot;
      GG[j * m + slot] = dot;
    }
    if (k == 1) {
      const T beta = T(damping);
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) ob[i] = zb[i] + beta * gb[i];
      continue;
    }
    double scale = 0.0;
    for (int64_t j = 0; j < k; ++j) scale += double(GG[j * m + j]);
    scale /= double(k);
    if (!(scale > 0.0)) scale = 1.0;  // a zero memory (a converged, frozen sample)
    for (int64_t r = 0; r < k; ++r) {
      for (int64_t c = 0; c < k; ++c) A[r * k + c] = double(GG[r * m + c]);
      A[r * k + r] += ridge * scale;
    }
    solve_ones(A, y, k);
    double total = 0.0;
    for (int64_t j = 0; j < k; ++j) total += y[j];
    const T keep = T(1.0 - damping);
    for (int64_t i = 0; i < n; ++i) ob[i] = T(0);
    for (int64_t j = 0; j < k; ++j) {
      const T a = T(y[j] / total);
      const T* Fj = F + j * n;
      const T* Gj = G + j * n;
      if (keep == T(0)) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) ob[i] += a * Fj[i];
      } else {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) ob[i] += a * (Fj[i] - keep * Gj[i]);
      }
    }
  }
}

at::Tensor anderson_step_cpu(at::Tensor& images, at::Tensor& residuals, at::Tensor& gram,
                             const at::Tensor& z, const at::Tensor& g, int64_t slot, int64_t k,
                             double ridge, double damping) {
  const char* op = "difopt_accel::anderson_step_";
  TORCH_CHECK(z.dim() == 2, op, ": 'z' must be a (B, n) matrix, got shape ", z.sizes());
  const int64_t batch = z.size(0), n = z.size(1);
  TORCH_CHECK(images.dim() == 3 && images.size(0) == batch && images.size(2) == n, op,
              ": 'images' must have shape (B, m, n) = (", batch, ", m, ", n, "), got ",
              images.sizes());
  const int64_t m = images.size(1);
  TORCH_CHECK(residuals.sizes() == images.sizes(), op,
              ": 'residuals' must have the shape of 'images' ", images.sizes(), ", got ",
              residuals.sizes());
  TORCH_CHECK(gram.dim() == 3 && gram.size(0) == batch && gram.size(1) == m && gram.size(2) == m,
              op, ": 'gram' must have shape (B, m, m) = (", batch, ", ", m, ", ", m, "), got ",
              gram.sizes());
  TORCH_CHECK(g.sizes() == z.sizes(), op, ": 'g' must have the shape of 'z' ", z.sizes(),
              ", got ", g.sizes());
  TORCH_CHECK(k >= 1 && k <= m, op, ": 'k' must be in [1, m = ", m, "], got ", k);
  TORCH_CHECK(slot >= 0 && slot < k, op, ": 'slot' must be in [0, k = ", k, "), got ", slot);
  TORCH_CHECK(ridge >= 0.0 && std::isfinite(ridge), op,
              ": 'ridge' must be a finite float >= 0, got ", ridge);
  TORCH_CHECK(damping > 0.0 && damping <= 1.0, op, ": 'damping' must be in (0, 1], got ",
              damping);
  const auto dtype = z.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op,
              ": the tensors must be float32 or float64, got ", dtype);
  for (const at::Tensor* t :
       std::initializer_list<const at::Tensor*>{&images, &residuals, &gram, &z, &g}) {
    TORCH_CHECK(t->device().is_cpu(), op, ": every tensor must be on the CPU, got ",
                t->device());
    TORCH_CHECK(t->scalar_type() == dtype, op, ": every tensor must have the dtype of 'z' (",
                dtype, "), got ", t->scalar_type());
    TORCH_CHECK(t->is_contiguous(), op, ": every tensor must be contiguous");
  }
  at::Tensor out = at::empty_like(z);
  const AndersonShape shape{batch, m, n, slot, k};
  AT_DISPATCH_FLOATING_TYPES(dtype, "anderson_step_", [&] {
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      anderson_samples<scalar_t>(images.data_ptr<scalar_t>(), residuals.data_ptr<scalar_t>(),
                                 gram.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(),
                                 g.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), shape, ridge,
                                 damping, begin, end);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(difopt_accel, CPU, m) { m.impl("anderson_step_", &anderson_step_cpu); }

}  // namespace difopt_accel
