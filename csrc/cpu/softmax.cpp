#include "ops/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/dispatch.h"
#include "core/parallel.h"
#include "cpu/exp.h"
#include "cpu/row_reduce.h"
#include "cpu/softmax_rows.h"
#include "math/softmax.h"

namespace pynn {

SoftmaxShape softmax_shape(const TensorView& a, const TensorView& b, const TensorView* c,
                           int64_t dim, const char* op, const char* arg_a, const char* arg_b,
                           const char* arg_c) {
  check_defined(a, op, arg_a);
  check_defined(b, op, arg_b);
  check_same_dtype(a, b, op, arg_a, arg_b);
  check_same_device(a, b, op, arg_a, arg_b);
  check_same_shape(a, b, op, arg_a, arg_b);
  check_contiguous(a, op, arg_a);
  check_contiguous(b, op, arg_b);
  if (c) {
    check_defined(*c, op, arg_c);
    check_same_dtype(a, *c, op, arg_a, arg_c);
    check_same_device(a, *c, op, arg_a, arg_c);
    check_same_shape(a, *c, op, arg_a, arg_c);
    check_contiguous(*c, op, arg_c);
  }
  PYNN_CHECK(a.dim >= 1, op, ": ", arg_a, " must have at least 1 dim (view a 0-D tensor as 1-D)");
  PYNN_CHECK(dim >= 0 && dim < a.dim, op, ": dim ", dim, " is out of range for a ", a.dim,
             "-D ", arg_a);
  SoftmaxShape s;
  for (int d = 0; d < dim; ++d) s.outer *= a.sizes[d];
  s.n = a.sizes[dim];
  for (int d = static_cast<int>(dim) + 1; d < a.dim; ++d) s.inner *= a.sizes[d];
  return s;
}

namespace cpu {
namespace {

// Partial sums of the tiles' columns are kept per column; a contiguous row (inner == 1) reduces
// through cpu/row_reduce.h.
template <bool Log, class T>
inline void forward_impl(const T* x, T* y, int64_t n, int64_t inner, int64_t w) {
  const VecExp ex;
  if (inner == 1) {
    const T m = row_max(x, n);
    // y holds the exps first; softmax then only rescales them.
    for (int64_t k = 0; k < n; ++k) y[k] = ex(x[k] - m);
    const double s = row_sum_product(n, y);
    if constexpr (Log) {
      const T log_s = static_cast<T>(std::log(s));
      for (int64_t k = 0; k < n; ++k) y[k] = softmax_output<true>(x[k], m, T(0), log_s);
    } else {
      const T inv_s = static_cast<T>(1.0 / s);
      for (int64_t k = 0; k < n; ++k) y[k] *= inv_s;
    }
    return;
  }
  T m[kSoftmaxTile];
  double s[kSoftmaxTile];
  for (int64_t j = 0; j < w; ++j) {
    m[j] = -std::numeric_limits<T>::infinity();
    s[j] = 0.0;
  }
  for (int64_t k = 0; k < n; ++k)
    for (int64_t j = 0; j < w; ++j) m[j] = max_step(m[j], x[k * inner + j]);
  for (int64_t k = 0; k < n; ++k)
    for (int64_t j = 0; j < w; ++j) {
      const T e = ex(x[k * inner + j] - m[j]);
      y[k * inner + j] = e;
      s[j] += static_cast<double>(e);
    }
  T scale[kSoftmaxTile];
  for (int64_t j = 0; j < w; ++j)
    scale[j] = static_cast<T>(Log ? std::log(s[j]) : 1.0 / s[j]);
  for (int64_t k = 0; k < n; ++k)
    for (int64_t j = 0; j < w; ++j) {
      const int64_t i = k * inner + j;
      if constexpr (Log) y[i] = softmax_output<true>(x[i], m[j], T(0), scale[j]);
      else y[i] *= scale[j];
    }
}

template <bool Log, class T>
inline void backward_impl(const T* g, const T* y, T* gi, int64_t n, int64_t inner, int64_t w) {
  const VecExp ex;
  if (inner == 1) {
    // softmax_backward_term: sum(g) for log_softmax, sum(g * y) for softmax
    const T dot = static_cast<T>(Log ? row_sum_product(n, g) : row_sum_product(n, g, y));
    for (int64_t k = 0; k < n; ++k) gi[k] = softmax_backward<Log>(g[k], y[k], dot, ex);
    return;
  }
  double acc[kSoftmaxTile];
  for (int64_t j = 0; j < w; ++j) acc[j] = 0.0;
  for (int64_t k = 0; k < n; ++k)
    for (int64_t j = 0; j < w; ++j)
      acc[j] += static_cast<double>(softmax_backward_term<Log>(g[k * inner + j], y[k * inner + j]));
  T dot[kSoftmaxTile];
  for (int64_t j = 0; j < w; ++j) dot[j] = static_cast<T>(acc[j]);
  for (int64_t k = 0; k < n; ++k)
    for (int64_t j = 0; j < w; ++j) {
      const int64_t i = k * inner + j;
      gi[i] = softmax_backward<Log>(g[i], y[i], dot[j], ex);
    }
}

template <class T>
inline void forward_dispatch(const T* x, T* y, int64_t n, int64_t inner, int64_t w, bool lg) {
  if (lg) forward_impl<true>(x, y, n, inner, w);
  else forward_impl<false>(x, y, n, inner, w);
}

template <class T>
inline void backward_dispatch(const T* g, const T* y, T* gi, int64_t n, int64_t inner,
                              int64_t w, bool lg) {
  if (lg) backward_impl<true>(g, y, gi, n, inner, w);
  else backward_impl<false>(g, y, gi, n, inner, w);
}

}  // namespace

PYNN_SOFTMAX_ENTRY
void softmax_tile_forward(const float* x, float* y, int64_t n, int64_t inner, int64_t w,
                          bool log_space) {
  forward_dispatch(x, y, n, inner, w, log_space);
}
PYNN_SOFTMAX_ENTRY
void softmax_tile_forward(const double* x, double* y, int64_t n, int64_t inner, int64_t w,
                          bool log_space) {
  forward_dispatch(x, y, n, inner, w, log_space);
}
PYNN_SOFTMAX_ENTRY
void softmax_tile_backward(const float* g, const float* y, float* gi, int64_t n, int64_t inner,
                           int64_t w, bool log_space) {
  backward_dispatch(g, y, gi, n, inner, w, log_space);
}
PYNN_SOFTMAX_ENTRY
void softmax_tile_backward(const double* g, const double* y, double* gi, int64_t n,
                           int64_t inner, int64_t w, bool log_space) {
  backward_dispatch(g, y, gi, n, inner, w, log_space);
}

}  // namespace cpu

namespace {

constexpr int64_t kGrainElems = 16384;

// Runs f(offset, width) for every (outer, column block) tile of a (outer, n, inner) tensor, in
// parallel.
template <class F>
void for_each_tile(const SoftmaxShape& s, F&& f) {
  const int64_t tile = cpu::softmax_tile_width(s.inner);
  const int64_t blocks = (s.inner + tile - 1) / tile;
  const int64_t tiles = s.outer * blocks;
  const int64_t per_tile = std::max<int64_t>(1, s.n * tile);
  parallel_for(0, tiles, std::max<int64_t>(1, kGrainElems / per_tile), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t o = t / blocks, j0 = (t % blocks) * tile;
      f(o * s.n * s.inner + j0, std::min(tile, s.inner - j0));
    }
  });
}

}  // namespace

void softmax_forward_cpu(const TensorView& input, const TensorView& output, int64_t dim,
                         bool log_space) {
  const char* op = log_space ? "log_softmax_forward" : "softmax_forward";
  const SoftmaxShape s = softmax_shape(input, output, nullptr, dim, op, "input", "output", "");
  if (input.numel() == 0) return;
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    const T* x = input.ptr<T>();
    T* y = output.ptr<T>();
    for_each_tile(s, [&](int64_t off, int64_t w) {
      cpu::softmax_tile_forward(x + off, y + off, s.n, s.inner, w, log_space);
    });
  });
}

void softmax_backward_cpu(const TensorView& grad_output, const TensorView& output,
                          const TensorView& grad_input, int64_t dim, bool log_space) {
  const char* op = log_space ? "log_softmax_backward" : "softmax_backward";
  const SoftmaxShape s = softmax_shape(grad_output, output, &grad_input, dim, op, "grad_output",
                                       "output", "grad_input");
  if (output.numel() == 0) return;
  dispatch_floating(output.dtype, op, "output", [&](auto tag) {
    using T = decltype(tag);
    const T* g = grad_output.ptr<T>();
    const T* y = output.ptr<T>();
    T* gi = grad_input.ptr<T>();
    for_each_tile(s, [&](int64_t off, int64_t w) {
      cpu::softmax_tile_backward(g + off, y + off, gi + off, s.n, s.inner, w, log_space);
    });
  });
}

}  // namespace pynn
