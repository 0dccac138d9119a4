// What the CPU kernels of every op share: chunking, the OpenMP loop over chunks, typed
// pointers into a chunk, and the vectorized entry points.
//
// One call handles a whole list of tensors: the elements of every tensor are cut into
// chunks, and one OpenMP loop runs over all chunks of all tensors, so small and large
// tensors share the threads evenly. Each op's per-element loop is a plain contiguous loop the
// compiler vectorizes, built for AVX2/FMA and a baseline target and picked at load time.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common.h"
#include "math_common.h"

namespace difopt_accel {

constexpr int64_t kChunk = 1 << 15;              // elements per unit of work
constexpr int64_t kParallelThreshold = 1 << 15;  // below this, one thread is faster

// The vectorized clone targets the x86-64-v3 ISA level (AVX2 and FMA: the fused multiply-adds
// of the math headers vectorize there; the baseline clone computes them one by one, with the
// same values). Not "arch=haswell": that clone is chosen by CPU model (only on Haswell
// itself), x86-64-v3 by the features present, which every AVX2/FMA CPU has.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && __GNUC__ >= 12
#define DIFOPT_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#elif defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
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

// Defines `name(const Args<float>&)` and `name(const Args<double>&)`, each compiled for the
// Haswell and the baseline target, that run `Loop::run(args)`. `Loop::run` must be
// DIFOPT_ALWAYS_INLINE (and what it calls too), so that the loop is compiled for each clone's
// target. The entry points are not templates: GCC multi-versions plain functions reliably.
#define DIFOPT_CPU_ENTRY_POINTS(name, Args, Loop)                                \
  DIFOPT_VECTOR_CLONES void name(const Args<float>& args) { Loop::run(args); } \
  DIFOPT_VECTOR_CLONES void name(const Args<double>& args) { Loop::run(args); }

// Calls `Loop::template loop<kFlags..., f1, f2, ...>(args)` with the runtime flags f1, f2,
// ... turned into template arguments, so that each combination gets its own branch-free loop.
template <typename Loop, bool... kFlags>
struct WithFlags {
  template <typename Args>
  static DIFOPT_ALWAYS_INLINE void run(const Args& args) {
    Loop::template loop<kFlags...>(args);
  }
  template <typename Args, typename... Rest>
  static DIFOPT_ALWAYS_INLINE void run(const Args& args, bool flag, Rest... rest) {
    if (flag) {
      WithFlags<Loop, kFlags..., true>::run(args, rest...);
    } else {
      WithFlags<Loop, kFlags..., false>::run(args, rest...);
    }
  }
};

inline bool cpu_dtype(at::ScalarType t) { return t == at::kFloat || t == at::kDouble; }
inline const DtypePolicy kCpuDtypes{cpu_dtype, "float32 and float64"};

// A contiguous range [begin, end) of the elements of tensor `index`.
struct Chunk {
  int64_t index;
  int64_t begin;
  int64_t end;

  int64_t size() const { return end - begin; }
};

inline std::vector<Chunk> make_chunks(TensorList ref, int64_t* total) {
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

// Runs body(T(), chunk) over the chunks of the tensors of `ref` (checked to be float32 or
// float64), with T the element type of the chunk's tensor.
template <typename Body>
void for_each_typed_chunk(TensorList ref, const Body& body) {
  int64_t total = 0;
  const std::vector<Chunk> chunks = make_chunks(ref, &total);
  for_each_chunk(chunks, total, [&](const Chunk& ch) {
    if (ref[ch.index].scalar_type() == at::kFloat) {
      body(float(), ch);
    } else {
      body(double(), ch);
    }
  });
}

// The chunk's first element in xs[chunk.index], or null when the list is empty (an absent
// optional list).
template <typename T>
const T* in_ptr(TensorList xs, const Chunk& ch) {
  return xs.empty() ? nullptr : xs[ch.index].const_data_ptr<T>() + ch.begin;
}

template <typename T>
T* out_ptr(TensorList xs, const Chunk& ch) {
  return xs.empty() ? nullptr : xs[ch.index].mutable_data_ptr<T>() + ch.begin;
}

// What the forward loops write as the first output: base[i] + factor * dir with a base (the
// parameters; rounded as the pure path's add(alpha=factor)), factor * dir without.
template <bool kBase, typename T>
DIFOPT_ALWAYS_INLINE T onto_base(const T* base, int64_t i, T factor, T direction) {
  return kBase ? fmadd(factor, direction, base[i]) : factor * direction;
}

}  // namespace difopt_accel
