#include <limits>

#include "core/cuda_utils.cuh"
#include "core/dispatch.h"
#include "cuda/softmax.cuh"
#include "math/softmax.h"
#include "ops/softmax.h"

namespace pynn {
namespace {

// One row (outer index o, column j) per group of L lanes; see cuda/softmax.cuh. Sums stay in T:
// the lanes' partial sums are short, and float accumulation keeps the kernel at memory speed.
template <int L, bool Log, class T>
__global__ void softmax_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows,
                                       int64_t n, int64_t inner) {
  for (cuda::RowCursor<L> c; c.row < rows; c.row += c.step) {
    const int64_t o = c.row / inner, j = c.row % inner;
    const T* xr = x + o * n * inner + j;
    T* yr = y + o * n * inner + j;
    T m = -std::numeric_limits<T>::infinity();
    for (int64_t k = c.lane; k < n; k += L) m = max_step(m, xr[k * inner]);
    m = cuda::group_max<L>(m);
    T s = T(0);
    for (int64_t k = c.lane; k < n; k += L) s += exp(xr[k * inner] - m);
    s = cuda::group_sum<L>(s);
    const T inv_s = T(1) / s, log_s = log(s);
    for (int64_t k = c.lane; k < n; k += L)
      yr[k * inner] = softmax_output<Log>(xr[k * inner], m, inv_s, log_s);
  }
}

template <int L, bool Log, class T>
__global__ void softmax_backward_kernel(const T* __restrict__ g, const T* __restrict__ y,
                                        T* __restrict__ gi, int64_t rows, int64_t n,
                                        int64_t inner) {
  for (cuda::RowCursor<L> c; c.row < rows; c.row += c.step) {
    const int64_t o = c.row / inner, j = c.row % inner;
    const int64_t base = o * n * inner + j;
    T dot = T(0);
    for (int64_t k = c.lane; k < n; k += L)
      dot += softmax_backward_term<Log>(g[base + k * inner], y[base + k * inner]);
    dot = cuda::group_sum<L>(dot);
    for (int64_t k = c.lane; k < n; k += L) {
      const int64_t i = base + k * inner;
      gi[i] = softmax_backward<Log>(g[i], y[i], dot);
    }
  }
}

// f(std::integral_constant<int, L>, std::bool_constant<Log>)
template <class F>
void dispatch_rows(int64_t inner, bool log_space, F&& f) {
  auto with_log = [&](auto lanes) {
    if (log_space) f(lanes, std::true_type{});
    else f(lanes, std::false_type{});
  };
  if (inner == 1) with_log(std::integral_constant<int, 32>{});
  else with_log(std::integral_constant<int, 1>{});
}

}  // namespace

void softmax_forward_cuda(const TensorView& input, const TensorView& output, int64_t dim,
                          bool log_space, uintptr_t stream) {
  const char* op = log_space ? "log_softmax_forward" : "softmax_forward";
  const SoftmaxShape s = softmax_shape(input, output, nullptr, dim, op, "input", "output", "");
  if (input.numel() == 0) return;
  const int64_t rows = s.outer * s.inner;
  cuda::DeviceGuard guard(input);
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    dispatch_rows(s.inner, log_space, [&](auto lanes, auto lg) {
      constexpr int L = decltype(lanes)::value;
      softmax_forward_kernel<L, decltype(lg)::value, T>
          <<<cuda::blocks_for(rows * L), cuda::kThreads, 0, cuda::as_stream(stream)>>>(
              input.ptr<T>(), output.ptr<T>(), rows, s.n, s.inner);
      cuda::check_launch("softmax_forward_kernel");
    });
  });
}

void softmax_backward_cuda(const TensorView& grad_output, const TensorView& output,
                           const TensorView& grad_input, int64_t dim, bool log_space,
                           uintptr_t stream) {
  const char* op = log_space ? "log_softmax_backward" : "softmax_backward";
  const SoftmaxShape s = softmax_shape(grad_output, output, &grad_input, dim, op, "grad_output",
                                       "output", "grad_input");
  if (output.numel() == 0) return;
  const int64_t rows = s.outer * s.inner;
  cuda::DeviceGuard guard(output);
  dispatch_floating(output.dtype, op, "output", [&](auto tag) {
    using T = decltype(tag);
    dispatch_rows(s.inner, log_space, [&](auto lanes, auto lg) {
      constexpr int L = decltype(lanes)::value;
      softmax_backward_kernel<L, decltype(lg)::value, T>
          <<<cuda::blocks_for(rows * L), cuda::kThreads, 0, cuda::as_stream(stream)>>>(
              grad_output.ptr<T>(), output.ptr<T>(), grad_input.ptr<T>(), rows, s.n, s.inner);
      cuda::check_launch("softmax_backward_kernel");
    });
  });
}

}  // namespace pynn
