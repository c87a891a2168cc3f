#pragma once
// Softmax / log-softmax math shared by the CPU loops, the CUDA kernels and the fused
// cross-entropy. A row is normalised in three steps: its maximum m, the sum s of exp(x - m),
// then each output. Subtracting m first keeps every exp argument <= 0, so logits of 1e4 (or 1e30
// in double) cannot overflow.
#include <cmath>

#include "core/macros.h"

namespace pynn {

// The exp the formulas use; the CPU loops pass their vectorisable exp (cpu/exp.h) instead.
struct StdExp {
  template <class T>
  PYNN_HOST_DEVICE T operator()(T x) const { return std::exp(x); }
};

// max that lets a NaN win, so a NaN anywhere in a row turns the whole row into NaN as in torch.
// Running max of a row. A NaN is skipped here (it never compares greater) but still poisons
// the sum of exp(x - max) and so every output of its row, which is what torch gives. Keeping it
// a plain compare-select lets the CPU loops vectorise it.
template <class T>
PYNN_HOST_DEVICE T max_step(T a, T b) {
  return b > a ? b : a;
}

// Log = true gives log_softmax. `m` is the row maximum, `s` the sum of exp(x - m) over the row.
// log(s) is passed in already taken so that a row pays for one log, not one per element.
template <bool Log, class T, class Exp = StdExp>
PYNN_HOST_DEVICE T softmax_output(T x, T m, T inv_s, T log_s, Exp exp_fn = {}) {
  if constexpr (Log) return x - m - log_s;
  else return exp_fn(x - m) * inv_s;
}

// The per-row reduction the backward needs: softmax uses sum(g * y), log_softmax sum(g).
template <bool Log, class T>
PYNN_HOST_DEVICE T softmax_backward_term(T g, T y) {
  if constexpr (Log) return g;
  else return g * y;
}

// softmax: dx = y * (g - sum(g * y)); log_softmax: dx = g - exp(y) * sum(g).
template <bool Log, class T, class Exp = StdExp>
PYNN_HOST_DEVICE T softmax_backward(T g, T y, T dot, Exp exp_fn = {}) {
  if constexpr (Log) return g - exp_fn(y) * dot;
  else return y * (g - dot);
}

}  // namespace pynn
