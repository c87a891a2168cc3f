#include "core/cuda_utils.cuh"
#include "core/dispatch.h"
#include "cuda/gemm.cuh"
#include "ops/linear.h"

namespace pynn {
namespace {

// output[i, j] = bias[j]; the GEMM then accumulates x @ W^T onto it with beta = 1.
template <class T>
__global__ void linear_bias_fill_kernel(const T* __restrict__ bias, int64_t bias_stride,
                                        T* __restrict__ out, int64_t out_rs, int64_t M,
                                        int64_t N) {
  const int64_t n = M * N;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / N, j = idx - i * N;
    out[i * out_rs + j] = bias[j * bias_stride];
  }
}

// Column sums of g [M, N]. A block owns 32 adjacent columns: threadIdx.x picks the column (a
// warp reads 32 neighbours of one row, coalesced), threadIdx.y strides down the rows, and the
// kBiasRows partial sums of a column are then added in a fixed tree in shared memory, so the
// result is deterministic (no atomics). Sums are kept in double as on the CPU: the kernel is
// bound by reading g, one add per element loaded, so double adds cost nothing even on GPUs with
// slow FP64. Parallelism is ceil(N / 32) blocks: ample for layer
// widths, short of the GPU for very tall, narrow gradients.
constexpr int kBiasCols = 32, kBiasRows = 16;

template <class T, class Acc>
__global__ void __launch_bounds__(kBiasCols* kBiasRows)
    linear_bias_grad_kernel(const T* __restrict__ g, int64_t rs, int64_t cs, int64_t M, int64_t N,
                            T* __restrict__ grad_bias, int64_t gb_stride) {
  __shared__ Acc partial[kBiasRows][kBiasCols + 1];
  const int64_t j = int64_t(blockIdx.x) * kBiasCols + threadIdx.x;
  Acc acc = Acc(0);
  if (j < N)
    for (int64_t i = threadIdx.y; i < M; i += kBiasRows) acc += static_cast<Acc>(g[i * rs + j * cs]);
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
#pragma unroll
  for (int half = kBiasRows / 2; half > 0; half /= 2) {
    if (threadIdx.y < half)
      partial[threadIdx.y][threadIdx.x] += partial[threadIdx.y + half][threadIdx.x];
    __syncthreads();
  }
  if (threadIdx.y == 0 && j < N) grad_bias[j * gb_stride] = static_cast<T>(partial[0][threadIdx.x]);
}

}  // namespace

void linear_forward_cuda(const TensorView& input, const TensorView& weight,
                         const std::optional<TensorView>& bias, const TensorView& output,
                         uintptr_t stream) {
  detail::check_linear_forward_args(input, weight, bias, output);
  check_device(input, Device::CUDA, "linear", "input");
  const int64_t M = input.sizes[0], K = input.sizes[1], N = weight.sizes[0];
  if (M == 0 || N == 0) return;
  cuda::DeviceGuard guard(input);
  const cudaStream_t s = cuda::as_stream(stream);
  dispatch_floating(input.dtype, "linear", "input", [&](auto tag) {
    using T = decltype(tag);
    if (bias) {
      linear_bias_fill_kernel<T><<<cuda::blocks_for(M * N), cuda::kThreads, 0, s>>>(
          bias->ptr<T>(), bias->strides[0], output.ptr<T>(), output.strides[0], M, N);
      cuda::check_launch("linear_bias_fill_kernel");
    }
    gemm_cuda<T>(1, M, N, K, T(1), input.ptr<T>(), 0, input.strides[0], input.strides[1],
                 weight.ptr<T>(), 0, weight.strides[1], weight.strides[0], bias ? T(1) : T(0),
                 output.ptr<T>(), 0, output.strides[0], s);
  });
}

void linear_backward_cuda(const TensorView& grad_output, const std::optional<TensorView>& input,
                          const std::optional<TensorView>& weight,
                          const std::optional<TensorView>& grad_input,
                          const std::optional<TensorView>& grad_weight,
                          const std::optional<TensorView>& grad_bias, uintptr_t stream) {
  detail::check_linear_backward_args(grad_output, input, weight, grad_input, grad_weight,
                                     grad_bias);
  check_device(grad_output, Device::CUDA, "linear_backward", "grad_output");
  const TensorView& g = grad_output;
  const int64_t M = g.sizes[0], N = g.sizes[1];
  cuda::DeviceGuard guard(g);
  const cudaStream_t s = cuda::as_stream(stream);
  dispatch_floating(g.dtype, "linear_backward", "grad_output", [&](auto tag) {
    using T = decltype(tag);
    if (grad_input) {
      const TensorView& w = *weight;
      gemm_cuda<T>(1, M, w.sizes[1], N, T(1), g.ptr<T>(), 0, g.strides[0], g.strides[1],
                   w.ptr<T>(), 0, w.strides[0], w.strides[1], T(0), grad_input->ptr<T>(), 0,
                   grad_input->strides[0], s);
    }
    if (grad_weight) {
      const TensorView& x = *input;
      gemm_cuda<T>(1, N, x.sizes[1], M, T(1), g.ptr<T>(), 0, g.strides[1], g.strides[0],
                   x.ptr<T>(), 0, x.strides[0], x.strides[1], T(0), grad_weight->ptr<T>(), 0,
                   grad_weight->strides[0], s);
    }
    if (grad_bias && N > 0) {
      // M == 0 still launches: every column sum is then written as 0.
      const dim3 block(kBiasCols, kBiasRows);
      const unsigned grid = static_cast<unsigned>((N + kBiasCols - 1) / kBiasCols);
      linear_bias_grad_kernel<T, typename acc_type<T>::type><<<grid, block, 0, s>>>(
          g.ptr<T>(), g.strides[0], g.strides[1], M, N, grad_bias->ptr<T>(),
          grad_bias->strides[0]);
      cuda::check_launch("linear_bias_grad_kernel");
    }
  });
}

}  // namespace pynn
