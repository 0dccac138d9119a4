// The CUDA kernels of the ops whose state is two moments, mu and nu (Adam, and RMSProp,
// whose mu takes part only when centered), written once over the math overloads
// moments_forward / moments_backward (adam_math.h, rms_math.h); included by adam_cuda.cu and
// rms_cuda.cu.
#pragma once

#include <type_traits>

#include "multi_tensor.cuh"

namespace difopt_accel {
namespace cuda {

// kMu: the first moment takes part. `source.get()` gives the step's coefficients.
template <typename T, bool kMu, typename Source>
__global__ void __launch_bounds__(kThreads)
    moments_forward_kernel(Pack<ForwardTensor> pack, Source source) {
  using Op = OpMath<T>;
  const auto c = source.get();
  for_each_element(pack, [&](const ForwardTensor& t, int64_t i) {
    Op m, v, d;
    const Op mu = kMu ? load<T>(t.mu, i) : Op(0);
    moments_forward(load<T>(t.g, i), mu, load<T>(t.nu, i), c, kMu, m, v, d);
    store<T>(t.out, i, onto_base<T>(t.base, i, c.factor, d));
    store<T>(t.mu_out, i, m);
    store<T>(t.nu_out, i, v);
  });
}

template <typename T, bool kMu, typename Source>
__global__ void __launch_bounds__(kThreads)
    moments_backward_kernel(Pack<BackwardTensor> pack, Source source) {
  using Op = OpMath<T>;
  const auto c = source.get();
  for_each_element(pack, [&](const BackwardTensor& t, int64_t i) {
    Op dg, dm, dv;
    const Op mu_new = kMu ? load<T>(t.mu_new, i) : Op(0);
    moments_backward(load<T>(t.g, i), mu_new, load<T>(t.nu_new, i), load<T>(t.d_out, i),
                     load<T>(t.d_mu_new, i), load<T>(t.d_nu_new, i), c, kMu, dg, dm, dv);
    store<T>(t.d_g, i, dg);
    store<T>(t.d_mu, i, dm);
    store<T>(t.d_nu, i, dv);
  });
}

template <typename T, bool kMu, typename Source>
constexpr auto moments_kernel(const ForwardTensor*) {
  return moments_forward_kernel<T, kMu, Source>;
}

template <typename T, bool kMu, typename Source>
constexpr auto moments_kernel(const BackwardTensor*) {
  return moments_backward_kernel<T, kMu, Source>;
}

// Enqueues the forward (ForwardTensor) or backward (BackwardTensor) kernel over `count`
// tensors, all of `dtype`, on `stream`, with the coefficient source make_source(TypeTag<T>())
// for storage type T. Only with kOptionalMu are kernels without the first moment built (and
// picked where has_mu is false).
template <bool kOptionalMu, typename Tensor, typename MakeSource>
cudaError_t launch_moments(const Tensor* tensors, int64_t count, Dtype dtype, bool has_mu,
                           cudaStream_t stream, const MakeSource& make_source) {
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto source = make_source(tag);
    using Source = std::decay_t<decltype(source)>;
    auto kernel = moments_kernel<T, true, Source>(tensors);
    if constexpr (kOptionalMu) {
      if (!has_mu) {
        kernel = moments_kernel<T, false, Source>(tensors);
      }
    }
    return launch_packed(tensors, count, [&](const Pack<Tensor>& pack, int blocks) {
      kernel<<<blocks, kThreads, 0, stream>>>(pack, source);
    });
  });
}

}  // namespace cuda
}  // namespace difopt_accel
