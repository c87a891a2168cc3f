// conv2d on the GPU: im2col of nb samples at a time into the caller's workspace, then the
// batched gemm_cuda (batched over samples with the weight shared, or over groups when there
// are more groups than samples, as in depthwise convolutions). The input gradient gathers its
// column entries (col2im as one thread per input element: no atomics, deterministic).
// Depthwise convolutions (one input channel per group), whose GEMMs would be 1 x KH*KW, use
// direct kernels instead: one thread per output / input element, one block per weight.
#include <algorithm>

#include "core/cuda_utils.cuh"
#include "core/dispatch.h"
#include "cuda/gemm.cuh"
#include "math/conv.h"
#include "ops/conv.h"

namespace pynn {
namespace {

// col[n, r, p] for r = (c, kh, kw) over all C channels: group g's rows are the contiguous block
// [g*kcol, (g+1)*kcol), which the GEMM reads with a batch stride.
template <class T>
__global__ void im2col_kernel(Conv2dGeom g, const T* __restrict__ x, T* __restrict__ col,
                              int64_t nb) {
  const int64_t rows = g.C * g.KH * g.KW, total = nb * rows * g.P;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = i % g.P, r = (i / g.P) % rows, n = i / (g.P * rows);
    col[i] = im2col_value(g, x + n * g.C * g.HW, r, p);
  }
}

// grad_input[n, c, ih, iw] = the sum of the column entries that im2col_kernel read from it.
template <class T>
__global__ void col2im_kernel(Conv2dGeom g, const T* __restrict__ col, T* __restrict__ gx,
                              int64_t nb) {
  const int64_t total = nb * g.C * g.HW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t iw = i % g.W, ih = (i / g.W) % g.H, c = (i / g.HW) % g.C, n = i / (g.HW * g.C);
    gx[i] = col2im_value(g, col + n * g.C * g.KH * g.KW * g.P, c, ih, iw);
  }
}

template <class T>
__global__ void bias_add_kernel(T* __restrict__ y, const T* __restrict__ b, int64_t total,
                                int64_t cout, int64_t P) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] += b[(i / P) % cout];
}

// The sum of v over a block of cuda::kThreads threads, valid in thread 0.
template <class Acc>
__device__ Acc block_sum(Acc v) {
  __shared__ Acc part[cuda::kThreads];
  part[threadIdx.x] = v;
  __syncthreads();
  for (int s = cuda::kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  return part[0];
}

// One block per output channel: a tree reduction over the batch and every position.
template <class T>
__global__ void __launch_bounds__(cuda::kThreads)
    bias_grad_kernel(const T* __restrict__ gy, T* __restrict__ gb, int64_t N, int64_t cout,
                     int64_t P) {
  using Acc = typename acc_type<T>::type;
  const int64_t c = blockIdx.x;
  Acc sum = 0;
  for (int64_t i = threadIdx.x; i < N * P; i += blockDim.x) {
    const int64_t n = i / P, p = i % P;
    sum += gy[(n * cout + c) * P + p];
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) gb[c] = static_cast<T>(sum);
}

// ---- depthwise (one input channel per group): direct kernels, no columns ----
// Output channel co reads input channel co / cout_g.

template <class T>
__global__ void depthwise_forward_kernel(Conv2dGeom g, const T* __restrict__ x,
                                         const T* __restrict__ w, const T* __restrict__ b,
                                         T* __restrict__ y) {
  const int64_t total = g.N * g.Cout * g.P;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = depthwise_output(g, x, w, b, i / (g.P * g.Cout), (i / g.P) % g.Cout, i % g.P);
}

template <class T>
__global__ void depthwise_backward_input_kernel(Conv2dGeom g, const T* __restrict__ gy,
                                                const T* __restrict__ w, T* __restrict__ gx) {
  const int64_t total = g.N * g.C * g.HW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t iw = i % g.W, ih = (i / g.W) % g.H, c = (i / g.HW) % g.C, n = i / (g.HW * g.C);
    gx[i] = depthwise_grad_input(g, gy, w, n, c, ih, iw);
  }
}

// One block per weight (co, kh, kw): a tree reduction over the batch and every position.
template <class T>
__global__ void __launch_bounds__(cuda::kThreads)
    depthwise_backward_weight_kernel(Conv2dGeom g, const T* __restrict__ gy,
                                     const T* __restrict__ x, T* __restrict__ gw) {
  using Acc = typename acc_type<T>::type;
  const int64_t j = blockIdx.x, kk = g.KH * g.KW;
  const int64_t co = j / kk, kh = (j / g.KW) % g.KH, kw = j % g.KW;
  Acc sum = 0;
  for (int64_t t = threadIdx.x; t < g.N * g.P; t += blockDim.x)
    sum += depthwise_grad_weight_term<T, Acc>(g, gy, x, co, kh, kw, t);
  sum = block_sum(sum);
  if (threadIdx.x == 0) gw[j] = static_cast<T>(sum);
}

void check_cuda_dense(const TensorView& t, const TensorView& ref, const char* op, const char* arg,
                      const char* ref_arg) {
  check_device(t, Device::CUDA, op, arg);
  check_contiguous(t, op, arg);
  check_same_dtype(ref, t, op, ref_arg, arg);
  check_same_device(ref, t, op, ref_arg, arg);
}

// Samples per workspace fill; the workspace is [nb, C*KH*KW*P] (unused when pointwise or
// depthwise).
int64_t check_workspace(const TensorView& ws, const Conv2dGeom& g, const char* op) {
  check_dim(ws, 2, op, "workspace");
  // gemm_cuda batches over at most 65535 samples per launch.
  constexpr int64_t kMaxBatch = 65535;
  if (g.pointwise || g.depthwise || g.N == 0) return std::clamp<int64_t>(g.N, 1, kMaxBatch);
  PYNN_CHECK(ws.sizes[0] >= 1 && ws.sizes[1] >= g.C * g.KH * g.KW * g.P, op, ": workspace ",
             ws.shape_str(), " cannot hold the columns of one sample (", g.C * g.KH * g.KW * g.P,
             " elements)");
  return std::min(ws.sizes[0], kMaxBatch);
}

// C[n, g] = alpha * A[g] (M x K) @ B[n, g] (K x Ncols) + beta * C[n, g] for cnt samples and all
// groups, batching over whichever of the two is larger. *_ns / *_gs: sample and group strides.
template <class T>
void gemm_samples_groups(int64_t cnt, int64_t G, int64_t M, int64_t Ncols, int64_t K,
                         const T* A, int64_t a_ns, int64_t a_gs, int64_t a_rs, int64_t a_cs,
                         const T* B, int64_t b_ns, int64_t b_gs, int64_t b_rs, int64_t b_cs,
                         T beta, T* C, int64_t c_ns, int64_t c_gs, int64_t c_rs,
                         cudaStream_t stream) {
  if (cnt >= G) {
    for (int64_t gi = 0; gi < G; ++gi)
      gemm_cuda<T>(cnt, M, Ncols, K, T(1), A + gi * a_gs, a_ns, a_rs, a_cs, B + gi * b_gs, b_ns,
                   b_rs, b_cs, beta, C + gi * c_gs, c_ns, c_rs, stream);
  } else {
    for (int64_t n = 0; n < cnt; ++n)
      gemm_cuda<T>(G, M, Ncols, K, T(1), A + n * a_ns, a_gs, a_rs, a_cs, B + n * b_ns, b_gs,
                   b_rs, b_cs, beta, C + n * c_ns, c_gs, c_rs, stream);
  }
  cuda::check_launch("gemm_kernel");
}

}  // namespace

void conv2d_forward_cuda(const TensorView& input, const TensorView& weight, const TensorView& bias,
                         bool has_bias, const TensorView& output, const TensorView& workspace,
                         Pair stride, Quad padding, Pair dilation, int64_t groups,
                         uintptr_t stream) {
  const char* op = "conv2d_forward";
  const Conv2dGeom g =
      conv2d_geom(input, weight, output, stride, padding, dilation, groups, op, "input", "output");
  check_device(input, Device::CUDA, op, "input");
  check_contiguous(input, op, "input");
  check_cuda_dense(weight, input, op, "weight", "input");
  check_cuda_dense(output, input, op, "output", "input");
  check_cuda_dense(workspace, input, op, "workspace", "input");
  if (has_bias) {
    check_cuda_dense(bias, input, op, "bias", "input");
    PYNN_CHECK(bias.dim == 1 && bias.sizes[0] == g.Cout, op, ": bias has shape ", bias.shape_str(),
               ", expected [", g.Cout, "]");
  }
  const int64_t nb = check_workspace(workspace, g, op);
  if (g.N == 0) return;
  cuda::DeviceGuard guard(input);
  const cudaStream_t s = cuda::as_stream(stream);
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    const T* x = input.ptr<T>();
    const T* w = weight.ptr<T>();
    T* y = output.ptr<T>();
    if (g.depthwise) {
      const int64_t total = g.N * g.Cout * g.P;
      depthwise_forward_kernel<T><<<cuda::blocks_for(total), cuda::kThreads, 0, s>>>(
          g, x, w, has_bias ? bias.ptr<T>() : nullptr, y);
      cuda::check_launch("depthwise_forward_kernel");
      return;
    }
    const int64_t ckk = g.C * g.KH * g.KW;
    for (int64_t n0 = 0; n0 < g.N; n0 += nb) {
      const int64_t cnt = std::min(nb, g.N - n0);
      const T* bm = x + n0 * g.C * g.HW;  // pointwise: the input is the column matrix
      int64_t b_ns = g.C * g.HW, b_gs = g.cin_g * g.HW;
      if (!g.pointwise) {
        T* col = workspace.ptr<T>();
        const int64_t total = cnt * ckk * g.P;
        im2col_kernel<T><<<cuda::blocks_for(total), cuda::kThreads, 0, s>>>(g, bm, col, cnt);
        cuda::check_launch("im2col_kernel");
        bm = col;
        b_ns = ckk * g.P;
        b_gs = g.kcol * g.P;
      }
      gemm_samples_groups<T>(cnt, g.G, g.cout_g, g.P, g.kcol, w, 0, g.cout_g * g.kcol, g.kcol, 1,
                             bm, b_ns, b_gs, g.P, 1, T(0), y + n0 * g.Cout * g.P, g.Cout * g.P,
                             g.cout_g * g.P, g.P, s);
    }
    if (has_bias) {
      const int64_t total = g.N * g.Cout * g.P;
      bias_add_kernel<T><<<cuda::blocks_for(total), cuda::kThreads, 0, s>>>(
          y, bias.ptr<T>(), total, g.Cout, g.P);
      cuda::check_launch("bias_add_kernel");
    }
  });
}

void conv2d_backward_input_cuda(const TensorView& grad_output, const TensorView& weight,
                                const TensorView& grad_input, const TensorView& workspace,
                                Pair stride, Quad padding, Pair dilation, int64_t groups,
                                uintptr_t stream) {
  const char* op = "conv2d_backward_input";
  const Conv2dGeom g = conv2d_geom(grad_input, weight, grad_output, stride, padding, dilation,
                                   groups, op, "grad_input", "grad_output");
  check_device(grad_output, Device::CUDA, op, "grad_output");
  check_contiguous(grad_output, op, "grad_output");
  check_cuda_dense(weight, grad_output, op, "weight", "grad_output");
  check_cuda_dense(grad_input, grad_output, op, "grad_input", "grad_output");
  check_cuda_dense(workspace, grad_output, op, "workspace", "grad_output");
  const int64_t nb = check_workspace(workspace, g, op);
  if (g.N == 0) return;
  cuda::DeviceGuard guard(grad_output);
  const cudaStream_t s = cuda::as_stream(stream);
  dispatch_floating(grad_output.dtype, op, "grad_output", [&](auto tag) {
    using T = decltype(tag);
    const T* gy = grad_output.ptr<T>();
    const T* w = weight.ptr<T>();
    T* gx = grad_input.ptr<T>();
    if (g.depthwise) {
      const int64_t total = g.N * g.C * g.HW;
      depthwise_backward_input_kernel<T><<<cuda::blocks_for(total), cuda::kThreads, 0, s>>>(
          g, gy, w, gx);
      cuda::check_launch("depthwise_backward_input_kernel");
      return;
    }
    const int64_t ckk = g.C * g.KH * g.KW;
    for (int64_t n0 = 0; n0 < g.N; n0 += nb) {
      const int64_t cnt = std::min(nb, g.N - n0);
      // W[g]^T (kcol x cout_g) @ grad_output[n, g]: straight into grad_input when pointwise.
      T* dst = g.pointwise ? gx + n0 * g.C * g.HW : workspace.ptr<T>();
      const int64_t d_ns = g.pointwise ? g.C * g.HW : ckk * g.P;
      const int64_t d_gs = g.pointwise ? g.cin_g * g.HW : g.kcol * g.P;
      gemm_samples_groups<T>(cnt, g.G, g.kcol, g.P, g.cout_g, w, 0, g.cout_g * g.kcol, 1, g.kcol,
                             gy + n0 * g.Cout * g.P, g.Cout * g.P, g.cout_g * g.P, g.P, 1, T(0),
                             dst, d_ns, d_gs, g.P, s);
      if (!g.pointwise) {
        const int64_t total = cnt * g.C * g.HW;
        col2im_kernel<T><<<cuda::blocks_for(total), cuda::kThreads, 0, s>>>(
            g, dst, gx + n0 * g.C * g.HW, cnt);
        cuda::check_launch("col2im_kernel");
      }
    }
  });
}

void conv2d_backward_weight_cuda(const TensorView& grad_output, const TensorView& input,
                                 const TensorView& grad_weight, const TensorView& workspace,
                                 Pair stride, Quad padding, Pair dilation, int64_t groups,
                                 uintptr_t stream) {
  const char* op = "conv2d_backward_weight";
  const Conv2dGeom g = conv2d_geom(input, grad_weight, grad_output, stride, padding, dilation,
                                   groups, op, "input", "grad_output");
  check_device(grad_output, Device::CUDA, op, "grad_output");
  check_contiguous(grad_output, op, "grad_output");
  check_cuda_dense(input, grad_output, op, "input", "grad_output");
  check_cuda_dense(grad_weight, grad_output, op, "grad_weight", "grad_output");
  check_cuda_dense(workspace, grad_output, op, "workspace", "grad_output");
  const int64_t nb = check_workspace(workspace, g, op);
  cuda::DeviceGuard guard(grad_output);
  const cudaStream_t s = cuda::as_stream(stream);
  dispatch_floating(grad_output.dtype, op, "grad_output", [&](auto tag) {
    using T = decltype(tag);
    const T* gy = grad_output.ptr<T>();
    const T* x = input.ptr<T>();
    T* gw = grad_weight.ptr<T>();
    if (g.N == 0) {
      cuda::check(cudaMemsetAsync(gw, 0, grad_weight.numel() * sizeof(T), s), "cudaMemsetAsync");
      return;
    }
    if (g.depthwise) {
      const int64_t blocks = grad_weight.numel();
      if (blocks == 0) return;  // no output channels: a 0-block launch is an error
      PYNN_CHECK(blocks <= 2147483647LL, op, ": too many weights for one grid");
      depthwise_backward_weight_kernel<T><<<static_cast<unsigned>(blocks), cuda::kThreads, 0, s>>>(
          g, gy, x, gw);
      cuda::check_launch("depthwise_backward_weight_kernel");
      return;
    }
    const int64_t ckk = g.C * g.KH * g.KW;
    for (int64_t n0 = 0; n0 < g.N; n0 += nb) {
      const int64_t cnt = std::min(nb, g.N - n0);
      const T* bm = x + n0 * g.C * g.HW;
      int64_t b_ns = g.C * g.HW, b_gs = g.cin_g * g.HW;
      if (!g.pointwise) {
        T* col = workspace.ptr<T>();
        const int64_t total = cnt * ckk * g.P;
        im2col_kernel<T><<<cuda::blocks_for(total), cuda::kThreads, 0, s>>>(g, bm, col, cnt);
        cuda::check_launch("im2col_kernel");
        bm = col;
        b_ns = ckk * g.P;
        b_gs = g.kcol * g.P;
      }
      // grad_weight[g] += grad_output[n, g] (cout_g x P) @ col[n, g]^T (P x kcol), one sample at
      // a time (the sum over samples is the GEMM's beta = 1), batched over groups.
      for (int64_t n = 0; n < cnt; ++n) {
        gemm_cuda<T>(g.G, g.cout_g, g.kcol, g.P, T(1), gy + (n0 + n) * g.Cout * g.P,
                     g.cout_g * g.P, g.P, 1, bm + n * b_ns, b_gs, 1, g.P,
                     n0 + n == 0 ? T(0) : T(1), gw, g.cout_g * g.kcol, g.kcol, s);
        cuda::check_launch("gemm_kernel");
      }
    }
  });
}

void conv2d_backward_bias_cuda(const TensorView& grad_output, const TensorView& grad_bias,
                               uintptr_t stream) {
  const char* op = "conv2d_backward_bias";
  check_dim(grad_output, 4, op, "grad_output");
  check_device(grad_output, Device::CUDA, op, "grad_output");
  check_contiguous(grad_output, op, "grad_output");
  check_cuda_dense(grad_bias, grad_output, op, "grad_bias", "grad_output");
  const int64_t N = grad_output.sizes[0], Cout = grad_output.sizes[1];
  const int64_t P = grad_output.sizes[2] * grad_output.sizes[3];
  PYNN_CHECK(grad_bias.dim == 1 && grad_bias.sizes[0] == Cout, op, ": grad_bias has shape ",
             grad_bias.shape_str(), ", expected [", Cout, "]");
  if (Cout == 0) return;
  PYNN_CHECK(Cout <= 2147483647LL, op, ": too many channels for one grid");
  cuda::DeviceGuard guard(grad_output);
  dispatch_floating(grad_output.dtype, op, "grad_output", [&](auto tag) {
    using T = decltype(tag);
    bias_grad_kernel<T><<<static_cast<unsigned>(Cout), cuda::kThreads, 0,
                          cuda::as_stream(stream)>>>(grad_output.ptr<T>(), grad_bias.ptr<T>(), N,
                                                     Cout, P);
    cuda::check_launch("bias_grad_kernel");
  });
}

}  // namespace pynn
