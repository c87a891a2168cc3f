#include "ops/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/dispatch.h"
#include "core/parallel.h"
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

namespace {

// Columns of the inner extent handled together: the rows of a tile then read consecutive
// addresses at every step along dim. With inner == 1 a tile is one contiguous row.
constexpr int64_t kTile = 16;
constexpr int64_t kGrainElems = 16384;

// Runs f(x_base, y_base, width) for every (outer, column block) tile of a (outer, n, inner)
// tensor, in parallel. Element (k, j) of a tile lives at base + k * inner + j.
template <class F>
void for_each_tile(const SoftmaxShape& s, F&& f) {
  const int64_t blocks = (s.inner + kTile - 1) / kTile;
  const int64_t tiles = s.outer * blocks;
  const int64_t per_tile = std::max<int64_t>(1, s.n * std::min(kTile, s.inner));
  parallel_for(0, tiles, std::max<int64_t>(1, kGrainElems / per_tile), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t o = t / blocks, j0 = (t % blocks) * kTile;
      f(o * s.n * s.inner + j0, std::min(kTile, s.inner - j0));
    }
  });
}

template <bool Log, class T>
void softmax_forward_impl(const T* x, T* y, const SoftmaxShape& s) {
  using Acc = typename acc_type<T>::type;
  const int64_t inner = s.inner, n = s.n;
  for_each_tile(s, [&](int64_t base, int64_t w) {
    const T* xb = x + base;
    T* yb = y + base;
    T m[kTile];
    Acc sum[kTile];
    for (int64_t j = 0; j < w; ++j) {
      m[j] = -std::numeric_limits<T>::infinity();
      sum[j] = Acc(0);
    }
    for (int64_t k = 0; k < n; ++k)
      for (int64_t j = 0; j < w; ++j) m[j] = nan_max(m[j], xb[k * inner + j]);
    for (int64_t k = 0; k < n; ++k)
      for (int64_t j = 0; j < w; ++j) sum[j] += std::exp(xb[k * inner + j] - m[j]);
    T inv_s[kTile], log_s[kTile];
    for (int64_t j = 0; j < w; ++j) {
      inv_s[j] = static_cast<T>(Acc(1) / sum[j]);
      log_s[j] = static_cast<T>(std::log(sum[j]));
    }
    for (int64_t k = 0; k < n; ++k)
      for (int64_t j = 0; j < w; ++j)
        yb[k * inner + j] = softmax_output<Log>(xb[k * inner + j], m[j], inv_s[j], log_s[j]);
  });
}

template <bool Log, class T>
void softmax_backward_impl(const T* g, const T* y, T* gi, const SoftmaxShape& s) {
  using Acc = typename acc_type<T>::type;
  const int64_t inner = s.inner, n = s.n;
  for_each_tile(s, [&](int64_t base, int64_t w) {
    Acc dot[kTile];
    for (int64_t j = 0; j < w; ++j) dot[j] = Acc(0);
    for (int64_t k = 0; k < n; ++k)
      for (int64_t j = 0; j < w; ++j) {
        const int64_t i = base + k * inner + j;
        dot[j] += softmax_backward_term<Log>(g[i], y[i]);
      }
    T d[kTile];
    for (int64_t j = 0; j < w; ++j) d[j] = static_cast<T>(dot[j]);
    for (int64_t k = 0; k < n; ++k)
      for (int64_t j = 0; j < w; ++j) {
        const int64_t i = base + k * inner + j;
        gi[i] = softmax_backward<Log>(g[i], y[i], d[j]);
      }
  });
}

template <class F>
void dispatch_log(bool log_space, F&& f) {
  if (log_space) f(std::true_type{});
  else f(std::false_type{});
}

}  // namespace

void softmax_forward_cpu(const TensorView& input, const TensorView& output, int64_t dim,
                         bool log_space) {
  const char* op = log_space ? "log_softmax_forward" : "softmax_forward";
  const SoftmaxShape s = softmax_shape(input, output, nullptr, dim, op, "input", "output", "");
  if (input.numel() == 0) return;
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    dispatch_log(log_space, [&](auto lg) {
      softmax_forward_impl<decltype(lg)::value>(input.ptr<T>(), output.ptr<T>(), s);
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
    dispatch_log(log_space, [&](auto lg) {
      softmax_backward_impl<decltype(lg)::value>(grad_output.ptr<T>(), output.ptr<T>(),
                                                  grad_input.ptr<T>(), s);
    });
  });
}

}  // namespace pynn
