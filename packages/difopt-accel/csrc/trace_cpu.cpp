// CPU kernels of the momentum (trace) operators (schemas in schemas.cpp, arithmetic in
// trace_math.h).
#include <torch/library.h>

#include "cpu_common.h"
#include "trace_common.h"

namespace difopt_accel {
namespace {

// One chunk of a forward call: out = base + factor * dir (base may be null or alias out);
// buf_out receives the new buffer (it may alias buf).
template <typename T>
struct TraceForwardArgs {
  int64_t n;
  const T* g;
  const T* buf;
  const T* base;
  T* out;
  T* buf_out;
  TraceCoeffs<T> c;
};

// Outputs may alias inputs element for element (the in-place op), never across elements.
struct TraceForwardLoop {
  template <typename T>
  static DIFOPT_ALWAYS_INLINE void run(const TraceForwardArgs<T>& a) {
    WithFlags<TraceForwardLoop>::run(a, a.c.first, a.c.nesterov, a.base != nullptr);
  }

  template <bool kFirst, bool kNesterov, bool kBase, typename T>
  static DIFOPT_ALWAYS_INLINE void loop(const TraceForwardArgs<T>& a) {
    const TraceCoeffs<T> c = a.c;
    const T *g = a.g, *buf = a.buf, *base = a.base;
    T *out = a.out, *buf_out = a.buf_out;
#pragma omp simd
    for (int64_t i = 0; i < a.n; ++i) {
      T b, d;
      trace_forward(g[i], kFirst ? T(0) : buf[i], c, kFirst, kNesterov, b, d);
      out[i] = onto_base<kBase>(base, i, c.factor, d);
      buf_out[i] = b;
    }
  }
};

// One chunk of a backward call; d_buf_new may be null (zero), d_buf may be null (not wanted).
template <typename T>
struct TraceBackwardArgs {
  int64_t n;
  const T* d_out;
  const T* d_buf_new;
  T* d_g;
  T* d_buf;
  TraceCoeffs<T> c;
};

struct TraceBackwardLoop {
  template <typename T>
  static DIFOPT_ALWAYS_INLINE void run(const TraceBackwardArgs<T>& a) {
    WithFlags<TraceBackwardLoop>::run(a, a.c.first, a.c.nesterov, a.d_buf_new != nullptr,
                                           a.d_buf != nullptr);
  }

  template <bool kFirst, bool kNesterov, bool kStateGrads, bool kTraceGrads, typename T>
  static DIFOPT_ALWAYS_INLINE void loop(const TraceBackwardArgs<T>& a) {
    const TraceCoeffs<T> c = a.c;
    const T *d_out = a.d_out, *d_buf_new = a.d_buf_new;
    T *d_g = a.d_g, *d_buf = a.d_buf;
#pragma omp simd
    for (int64_t i = 0; i < a.n; ++i) {
      T dg, db;
      trace_backward(d_out[i], kStateGrads ? d_buf_new[i] : T(0), c, kFirst, kNesterov, dg, db);
      d_g[i] = dg;
      if constexpr (kTraceGrads) {
        d_buf[i] = db;
      }
    }
  }
};

DIFOPT_CPU_ENTRY_POINTS(trace_forward_chunk, TraceForwardArgs, TraceForwardLoop)
DIFOPT_CPU_ENTRY_POINTS(trace_backward_chunk, TraceBackwardArgs, TraceBackwardLoop)

// Applies the forward step: reads grads/buf/base, writes out/buf_out (which may be the same
// tensors as buf/base for the in-place op).
void forward_all(TensorList grads, TensorList buf, TensorList base, TensorList out,
                 TensorList buf_out, int64_t step, const TraceHyper& hyper) {
  for_each_typed_chunk(grads, [&](auto zero, const Chunk& ch) {
    using T = decltype(zero);
    trace_forward_chunk(TraceForwardArgs<T>{
        ch.size(), in_ptr<T>(grads, ch), in_ptr<T>(buf, ch), in_ptr<T>(base, ch),
        out_ptr<T>(out, ch), out_ptr<T>(buf_out, ch), make_coeffs<T>(hyper, step)});
  });
}

// difopt_accel::trace (functional): returns (out, trace_new).
TensorVectors2 trace_cpu(TensorList grads, TensorList trace, TensorList params,
                         const at::Tensor& count, double momentum, double dampening,
                         bool nesterov, double factor) {
  const char* op = "difopt_accel::trace";
  const TraceHyper hyper{momentum, dampening, nesterov, factor};
  check_trace_forward(op, grads, trace, params, count, hyper, at::kCPU, kCpuDtypes);
  const int64_t step = host_step(op, count);
  TensorVector out = empty_like_all(grads);
  TensorVector trace_new = empty_like_all(trace);
  forward_all(grads, trace, params, out, trace_new, step, hyper);
  return {std::move(out), std::move(trace_new)};
}

// difopt_accel::trace_ (in place): trace is updated; out = out + factor * dir when
// accumulate, else out = factor * dir.
void trace_inplace_cpu(TensorList out, TensorList trace, TensorList grads,
                       const at::Tensor& count, double momentum, double dampening,
                       bool nesterov, double factor, bool accumulate) {
  const char* op = "difopt_accel::trace_";
  const TraceHyper hyper{momentum, dampening, nesterov, factor};
  check_trace_forward(op, grads, trace, {}, count, hyper, at::kCPU, kCpuDtypes);
  check_like(op, "out", out, "grads", grads);
  check_distinct_outputs(op, {{"out", out}, {"trace", trace}});
  const int64_t step = host_step(op, count);
  forward_all(grads, trace, accumulate ? out : TensorList(), out, trace, step, hyper);
}

// difopt_accel::trace_backward: returns (d_grads, d_trace); d_trace is empty unless
// trace_grads.
TensorVectors2 trace_backward_cpu(TensorList grad_out, TensorList grad_trace,
                                  const at::Tensor& count, double momentum, double dampening,
                                  bool nesterov, double factor, bool trace_grads) {
  const char* op = "difopt_accel::trace_backward";
  const TraceHyper hyper{momentum, dampening, nesterov, factor};
  check_trace_backward(op, grad_out, grad_trace, count, hyper, at::kCPU, kCpuDtypes);
  const int64_t step = host_step(op, count);
  TensorVector d_g = empty_like_all(grad_out);
  TensorVector d_trace = empty_like_if(trace_grads, grad_out);
  for_each_typed_chunk(grad_out, [&](auto zero, const Chunk& ch) {
    using T = decltype(zero);
    trace_backward_chunk(TraceBackwardArgs<T>{
        ch.size(), in_ptr<T>(grad_out, ch), in_ptr<T>(grad_trace, ch), out_ptr<T>(d_g, ch),
        out_ptr<T>(d_trace, ch), make_coeffs<T>(hyper, step)});
  });
  return {std::move(d_g), std::move(d_trace)};
}

}  // namespace

TORCH_LIBRARY_IMPL(difopt_accel, CPU, m) {
  m.impl("trace", &trace_cpu);
  m.impl("trace_", &trace_inplace_cpu);
  m.impl("trace_backward", &trace_backward_cpu);
}

}  // namespace difopt_accel
