#pragma once
// A sum in double of f(k) over k < n, in Lanes independent partial sums: one running sum would be
// a dependent add per element, which the compiler may not vectorise without reassociating
// (-ffast-math). The order is fixed (lanes, the tail into lane 0, then the lanes in turn), so
// the result does not depend on how a caller splits its work over threads. Inline: a caller
// compiled per ISA (PYNN_CPU_MULTIVERSION) vectorises it at its own width.
#include <cstdint>

#include "core/macros.h"

namespace pynn {
namespace cpu {

template <int Lanes, class F>
PYNN_ALWAYS_INLINE double lane_sum(int64_t n, F&& f) {
  double lane[Lanes] = {};
  int64_t k = 0;
  for (; k + Lanes <= n; k += Lanes)
    for (int u = 0; u < Lanes; ++u) lane[u] += static_cast<double>(f(k + u));
  for (; k < n; ++k) lane[0] += static_cast<double>(f(k));
  double s = 0.0;
  for (int u = 0; u < Lanes; ++u) s += lane[u];
  return s;
}

}  // namespace cpu
}  // namespace pynn
