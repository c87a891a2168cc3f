#include "core/cuda_utils.cuh"
#include "core/dispatch.h"
#include "math/activation.h"
#include "ops/activation.h"

namespace pynn {
namespace {

template <ActKind K, class T>
__global__ void activation_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n,
                                          T slope) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = activation_forward<K>(x[i], slope);
}

template <ActKind K, class T>
__global__ void activation_backward_kernel(const T* __restrict__ g, const T* __restrict__ s,
                                           T* __restrict__ gi, int64_t n, T slope) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    gi[i] = activation_backward<K>(g[i], s[i], slope);
}

}  // namespace

void activation_forward_cuda(const TensorView& input, const TensorView& output, int kind,
                             double slope, uintptr_t stream) {
  const char* op = "activation_forward";
  check_same_dtype(input, output, op, "input", "output");
  check_same_device(input, output, op, "input", "output");
  check_same_dense_layout(input, output, op, "input", "output");
  const int64_t n = input.numel();
  if (n == 0) return;
  cuda::DeviceGuard guard(input);
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    dispatch_activation(kind, op, [&](auto act) {
      constexpr ActKind K = decltype(act)::kind;
      activation_forward_kernel<K, T><<<cuda::blocks_for(n), cuda::kThreads, 0,
                                        cuda::as_stream(stream)>>>(
          input.ptr<T>(), output.ptr<T>(), n, static_cast<T>(slope));
      cuda::check_launch("activation_forward_kernel");
    });
  });
}

void activation_backward_cuda(const TensorView& grad_output, const TensorView& saved,
                              const TensorView& grad_input, int kind, double slope,
                              uintptr_t stream) {
  const char* op = "activation_backward";
  check_same_dtype(grad_output, saved, op, "grad_output", "saved");
  check_same_dtype(grad_output, grad_input, op, "grad_output", "grad_input");
  check_same_device(grad_output, saved, op, "grad_output", "saved");
  check_same_device(grad_output, grad_input, op, "grad_output", "grad_input");
  check_same_dense_layout(grad_output, saved, op, "grad_output", "saved");
  check_same_dense_layout(grad_output, grad_input, op, "grad_output", "grad_input");
  const int64_t n = grad_output.numel();
  if (n == 0) return;
  cuda::DeviceGuard guard(grad_output);
  dispatch_floating(grad_output.dtype, op, "grad_output", [&](auto tag) {
    using T = decltype(tag);
    dispatch_activation(kind, op, [&](auto act) {
      constexpr ActKind K = decltype(act)::kind;
      activation_backward_kernel<K, T><<<cuda::blocks_for(n), cuda::kThreads, 0,
                                         cuda::as_stream(stream)>>>(
          grad_output.ptr<T>(), saved.ptr<T>(), grad_input.ptr<T>(), n, static_cast<T>(slope));
      cuda::check_launch("activation_backward_kernel");
    });
  });
}

}  // namespace pynn
