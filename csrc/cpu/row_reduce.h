#pragma once
// Reductions along a contiguous row for the softmax-shaped CPU loops, written on 64-byte GCC
// vectors. Each PYNN_CPU_MULTIVERSION clone that inlines them compiles a vector at its own width:
// one AVX-512 register, two AVX2 ones, four SSE2 ones.
//
// Written as lane arrays instead (cpu/lane_sum.h), GCC 12 left the row maximum as eight scalar
// vmaxss per iteration (a float compare-select has no reduction form without
// -ffinite-math-only) and the double sum at four lanes: 36% of a 256 x 1000 softmax forward.
//
// The order of the additions is fixed by the row alone (lanes, then the lanes in turn, then the
// tail), so a result does not depend on how a caller splits rows over threads. GCC and Clang both
// have these vectors (and __builtin_convertvector), and the build needs one of them.
#include <cstdint>
#include <cstring>
#include <limits>

#include "core/macros.h"
#include "math/softmax.h"

namespace pynn {
namespace cpu {

// V: 64 bytes of T, for the maximum. N: 8 lanes of T, which widen to D, 8 doubles (64 bytes),
// for the sums.
template <class T>
struct Vec {
  typedef T V __attribute__((vector_size(64)));
  typedef T N __attribute__((vector_size(8 * sizeof(T))));
  typedef double D __attribute__((vector_size(64)));
  static constexpr int64_t v_lanes = 64 / sizeof(T);
};

// No helper here takes or returns a vector by value: GCC warns (-Wpsabi) that a 64-byte vector
// is passed differently by the clones' instruction sets, even where every call is inlined.

// max_step over x[0, n): NaN is skipped, as there. -inf for an empty row.
template <class T>
PYNN_ALWAYS_INLINE T row_max(const T* x, int64_t n) {
  using V = typename Vec<T>::V;
  constexpr int64_t W = Vec<T>::v_lanes;
  V lane = V{} - std::numeric_limits<T>::infinity();
  int64_t k = 0;
  for (; k + W <= n; k += W) {
    V v;
    std::memcpy(&v, x + k, sizeof v);
    lane = v > lane ? v : lane;
  }
  T m = lane[0];
  for (int64_t u = 1; u < W; ++u) m = max_step(m, lane[u]);
  for (; k < n; ++k) m = max_step(m, x[k]);
  return m;
}

// acc += the 8 products f0[k + u] * f1[k + u] * ..., u < 8, in double.
template <class T, class... Rest>
PYNN_ALWAYS_INLINE void add_products8(typename Vec<T>::D& acc, int64_t k, const T* f0,
                                      const Rest*... rest) {
  using N = typename Vec<T>::N;
  N p;
  std::memcpy(&p, f0 + k, sizeof p);
  (
      [&] {
        N v;
        std::memcpy(&v, rest + k, sizeof v);
        p *= v;
      }(),
      ...);
  acc += __builtin_convertvector(p, typename Vec<T>::D);
}

// The sum in double of the products f0[k] * f1[k] * ... over k < n (one factor: the sum of f0).
// Four accumulators of 8 doubles cover the latency of the additions.
template <class T, class... Rest>
PYNN_ALWAYS_INLINE double row_sum_product(int64_t n, const T* f0, const Rest*... rest) {
  using D = typename Vec<T>::D;
  D a0 = {}, a1 = {}, a2 = {}, a3 = {};
  int64_t k = 0;
  for (; k + 32 <= n; k += 32) {
    add_products8(a0, k, f0, rest...);
    add_products8(a1, k + 8, f0, rest...);
    add_products8(a2, k + 16, f0, rest...);
    add_products8(a3, k + 24, f0, rest...);
  }
  for (; k + 8 <= n; k += 8) add_products8(a0, k, f0, rest...);
  double s = 0.0;
  for (int u = 0; u < 8; ++u) s += (a0[u] + a1[u]) + (a2[u] + a3[u]);
  for (; k < n; ++k) s += static_cast<double>((f0[k] * ... * rest[k]));
  return s;
}

}  // namespace cpu
}  // namespace pynn
