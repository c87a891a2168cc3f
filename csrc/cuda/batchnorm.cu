// Batch normalisation on the GPU. Each channel's M = N * P values are cut into S splits (S from
// the workspace size); a block reduces one (channel, split) in double, Welford per thread and
// Chan merges across threads, into the workspace; a per-channel kernel merges the splits in a
// fixed order (deterministic), writes the saved statistics and updates the running ones; an
// elementwise kernel normalises. The backward has the same shape: per-split sums of dy and
// dy * (x - mean), a per-channel merge that writes grad_weight / grad_bias, then grad_input.
// Two reduction layouts: P of stride 1 (NCHW: threads walk along P) and C of stride 1 (channels
// last, (N, C): a warp covers 32 neighbouring channels of a row).
#include <algorithm>

#include "core/cuda_utils.cuh"
#include "core/dispatch.h"
#include "math/batchnorm.h"
#include "ops/batchnorm.h"

namespace pynn {
namespace {

struct Geo {
  int64_t N, C, P;
};

struct Str {
  int64_t n, c, p;
};

inline Str str_of(const TensorView& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

constexpr int kPlanarThreads = 256;
constexpr int kRowsX = 32, kRowsY = 8;  // channels x rows per block of the channels-inner kernels

__device__ inline int64_t split_begin(int64_t M, int64_t S, int64_t s) { return M * s / S; }

// ---- forward statistics ----

// Tree-merges the block's moments in shared memory; thread 0 gets the result.
template <int kThreads>
__device__ BnMoments block_merge(BnMoments m, BnMoments* sh, int tid) {
  sh[tid] = m;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (tid < stride) sh[tid] = bn_merge(sh[tid], sh[tid + stride]);
    __syncthreads();
  }
  return sh[0];
}

template <class T>
__global__ void batch_norm_moments_planar_kernel(const T* __restrict__ x, Geo geo, Str xs,
                                                 int64_t S, double* __restrict__ partial) {
  __shared__ BnMoments sh[kPlanarThreads];
  const int64_t c = blockIdx.x, s = blockIdx.y, M = geo.N * geo.P;
  BnMoments m{};
  for (int64_t i = split_begin(M, S, s) + threadIdx.x; i < split_begin(M, S, s + 1);
       i += kPlanarThreads) {
    const int64_t n = i / geo.P, p = i - n * geo.P;
    bn_welford_push(m, static_cast<double>(x[n * xs.n + c * xs.c + p * xs.p]));
  }
  m = block_merge<kPlanarThreads>(m, sh, threadIdx.x);
  if (threadIdx.x == 0) {
    double* out = partial + (c * S + s) * 3;
    out[0] = m.n;
    out[1] = m.mean;
    out[2] = m.m2;
  }
}

template <class T>
__global__ void batch_norm_moments_rows_kernel(const T* __restrict__ x, Geo geo, Str xs,
                                               int64_t S, double* __restrict__ partial) {
  __shared__ BnMoments sh[kRowsY][kRowsX];
  const int64_t c = blockIdx.x * int64_t(kRowsX) + threadIdx.x, s = blockIdx.y;
  const int64_t rows = geo.N * geo.P;
  BnMoments m{};
  if (c < geo.C)
    for (int64_t r = split_begin(rows, S, s) + threadIdx.y; r < split_begin(rows, S, s + 1);
         r += kRowsY) {
      const int64_t n = r / geo.P, p = r - n * geo.P;
      bn_welford_push(m, static_cast<double>(x[n * xs.n + p * xs.p + c * xs.c]));
    }
  sh[threadIdx.y][threadIdx.x] = m;
  __syncthreads();
  for (int stride = kRowsY / 2; stride > 0; stride >>= 1) {
    if (threadIdx.y < stride)
      sh[threadIdx.y][threadIdx.x] =
          bn_merge(sh[threadIdx.y][threadIdx.x], sh[threadIdx.y + stride][threadIdx.x]);
    __syncthreads();
  }
  if (threadIdx.y == 0 && c < geo.C) {
    double* out = partial + (c * S + s) * 3;
    out[0] = sh[0][threadIdx.x].n;
    out[1] = sh[0][threadIdx.x].mean;
    out[2] = sh[0][threadIdx.x].m2;
  }
}

template <class T>
__global__ void batch_norm_finalize_kernel(const double* __restrict__ partial, int64_t C,
                                           int64_t S, double eps, double momentum,
                                           T* running_mean, int64_t rm_stride, T* running_var,
                                           int64_t rv_stride, double* __restrict__ save_mean,
                                           int64_t sm_stride, double* __restrict__ save_invstd,
                                           int64_t si_stride) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  BnMoments m{};
  for (int64_t s = 0; s < S; ++s) {
    const double* p = partial + (c * S + s) * 3;
    m = bn_merge(m, BnMoments{p[0], p[1], p[2]});
  }
  const BnStats st = bn_train_stats(m, eps);
  save_mean[c * sm_stride] = st.mean;
  save_invstd[c * si_stride] = st.invstd;
  bn_update_running<T>(running_mean ? running_mean + c * rm_stride : nullptr,
                       running_var ? running_var + c * rv_stride : nullptr, m, momentum);
}

template <class T>
__global__ void batch_norm_eval_stats_kernel(const T* __restrict__ running_mean,
                                             int64_t rm_stride, const T* __restrict__ running_var,
                                             int64_t rv_stride, int64_t C, double eps,
                                             double* __restrict__ save_mean, int64_t sm_stride,
                                             double* __restrict__ save_invstd, int64_t si_stride) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const BnStats st = bn_eval_stats(static_cast<double>(running_mean[c * rm_stride]),
                                   static_cast<double>(running_var[c * rv_stride]), eps);
  save_mean[c * sm_stride] = st.mean;
  save_invstd[c * si_stride] = st.invstd;
}

// Logical index -> (n, c, p), in the order of memory so neighbouring threads touch neighbours.
template <bool kChannelsInner>
__device__ inline void decompose(int64_t i, const Geo& geo, int64_t& n, int64_t& c, int64_t& p) {
  if (kChannelsInner) {
    c = i % geo.C;
    const int64_t r = i / geo.C;
    p = r % geo.P;
    n = r / geo.P;
  } else {
    p = i % geo.P;
    const int64_t r = i / geo.P;
    c = r % geo.C;
    n = r / geo.C;
  }
}

template <class T, bool kChannelsInner>
__global__ void batch_norm_forward_kernel(const T* __restrict__ x, T* __restrict__ y, Geo geo,
                                          Str xs, Str ys, const double* __restrict__ mean,
                                          int64_t sm_stride, const double* __restrict__ invstd,
                                          int64_t si_stride, const T* __restrict__ w,
                                          int64_t w_stride, const T* __restrict__ b,
                                          int64_t b_stride) {
  const int64_t total = geo.N * geo.C * geo.P;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, p;
    decompose<kChannelsInner>(i, geo, n, c, p);
    const BnForwardCoeffs<T> k = bn_forward_coeffs<T>(
        BnStats{mean[c * sm_stride], invstd[c * si_stride]}, w ? w + c * w_stride : nullptr,
        b ? b + c * b_stride : nullptr);
    y[n * ys.n + c * ys.c + p * ys.p] = bn_forward(x[n * xs.n + c * xs.c + p * xs.p], k);
  }
}

// ---- backward ----

template <class T>
__global__ void batch_norm_grad_sums_planar_kernel(const T* __restrict__ dy,
                                                   const T* __restrict__ x, Geo geo, Str gs,
                                                   Str xs, const double* __restrict__ mean,
                                                   int64_t sm_stride, int64_t S,
                                                   double* __restrict__ partial) {
  __shared__ double sh_a[kPlanarThreads], sh_b[kPlanarThreads];
  const int64_t c = blockIdx.x, s = blockIdx.y, M = geo.N * geo.P;
  const double mu = mean[c * sm_stride];
  double a = 0.0, b = 0.0;
  for (int64_t i = split_begin(M, S, s) + threadIdx.x; i < split_begin(M, S, s + 1);
       i += kPlanarThreads) {
    const int64_t n = i / geo.P, p = i - n * geo.P;
    const double g = static_cast<double>(dy[n * gs.n + c * gs.c + p * gs.p]);
    a += g;
    b += g * (static_cast<double>(x[n * xs.n + c * xs.c + p * xs.p]) - mu);
  }
  sh_a[threadIdx.x] = a;
  sh_b[threadIdx.x] = b;
  __syncthreads();
  for (int stride = kPlanarThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      sh_a[threadIdx.x] += sh_a[threadIdx.x + stride];
      sh_b[threadIdx.x] += sh_b[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partial[(c * S + s) * 2] = sh_a[0];
    partial[(c * S + s) * 2 + 1] = sh_b[0];
  }
}

template <class T>
__global__ void batch_norm_grad_sums_rows_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                                 Geo geo, Str gs, Str xs,
                                                 const double* __restrict__ mean,
                                                 int64_t sm_stride, int64_t S,
                                                 double* __restrict__ partial) {
  __shared__ double sh_a[kRowsY][kRowsX], sh_b[kRowsY][kRowsX];
  const int64_t c = blockIdx.x * int64_t(kRowsX) + threadIdx.x, s = blockIdx.y;
  const int64_t rows = geo.N * geo.P;
  double a = 0.0, b = 0.0;
  if (c < geo.C) {
    const double mu = mean[c * sm_stride];
    for (int64_t r = split_begin(rows, S, s) + threadIdx.y; r < split_begin(rows, S, s + 1);
         r += kRowsY) {
      const int64_t n = r / geo.P, p = r - n * geo.P;
      const double g = static_cast<double>(dy[n * gs.n + p * gs.p + c * gs.c]);
      a += g;
      b += g * (static_cast<double>(x[n * xs.n + p * xs.p + c * xs.c]) - mu);
    }
  }
  sh_a[threadIdx.y][threadIdx.x] = a;
  sh_b[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  for (int stride = kRowsY / 2; stride > 0; stride >>= 1) {
    if (threadIdx.y < stride) {
      sh_a[threadIdx.y][threadIdx.x] += sh_a[threadIdx.y + stride][threadIdx.x];
      sh_b[threadIdx.y][threadIdx.x] += sh_b[threadIdx.y + stride][threadIdx.x];
    }
    __syncthreads();
  }
  if (threadIdx.y == 0 && c < geo.C) {
    partial[(c * S + s) * 2] = sh_a[0][threadIdx.x];
    partial[(c * S + s) * 2 + 1] = sh_b[0][threadIdx.x];
  }
}

template <class T>
__global__ void batch_norm_grad_finalize_kernel(const double* __restrict__ partial, int64_t C,
                                                int64_t S, const double* __restrict__ invstd,
                                                int64_t si_stride, double* __restrict__ sums,
                                                T* grad_weight, int64_t gw_stride, T* grad_bias,
                                                int64_t gb_stride) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  double a = 0.0, b = 0.0;
  for (int64_t s = 0; s < S; ++s) {
    a += partial[(c * S + s) * 2];
    b += partial[(c * S + s) * 2 + 1];
  }
  sums[2 * c] = a;
  sums[2 * c + 1] = b;
  if (grad_weight) grad_weight[c * gw_stride] = static_cast<T>(b * invstd[c * si_stride]);
  if (grad_bias) grad_bias[c * gb_stride] = static_cast<T>(a);
}

template <class T, bool kChannelsInner>
__global__ void batch_norm_backward_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                           T* __restrict__ dx, Geo geo, Str gs, Str xs, Str ds,
                                           const double* __restrict__ mean, int64_t sm_stride,
                                           const double* __restrict__ invstd, int64_t si_stride,
                                           const T* __restrict__ w, int64_t w_stride,
                                           const double* __restrict__ sums, bool training) {
  const int64_t total = geo.N * geo.C * geo.P;
  const double count = static_cast<double>(geo.N * geo.P);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, p;
    decompose<kChannelsInner>(i, geo, n, c, p);
    const BnBackwardCoeffs<T> k = bn_backward_coeffs<T>(
        BnStats{mean[c * sm_stride], invstd[c * si_stride]}, w ? w + c * w_stride : nullptr,
        sums ? sums[2 * c] : 0.0, sums ? sums[2 * c + 1] : 0.0, count, training);
    dx[n * ds.n + c * ds.c + p * ds.p] =
        bn_backward_input(dy[n * gs.n + c * gs.c + p * gs.p], x[n * xs.n + c * xs.c + p * xs.p], k);
  }
}

// S from the workspace: C * (3 * S + 2) doubles.
int64_t splits_of(const TensorView& workspace, int64_t C, const char* op) {
  PYNN_CHECK_TYPE(workspace.dtype == DType::Float64, op, ": workspace must be float64, got ",
                  dtype_name(workspace.dtype));
  PYNN_CHECK(workspace.dim == 1 && workspace.stride(0) == 1, op,
             ": workspace must be a contiguous 1-D tensor");
  const int64_t per_channel = C > 0 ? workspace.numel() / C : 0;
  PYNN_CHECK(C == 0 || (per_channel >= 5 && (per_channel - 2) % 3 == 0 &&
                        per_channel * C == workspace.numel()),
             op, ": workspace must hold C * (3 * S + 2) float64 values for some S >= 1, got ",
             workspace.numel(), " for C = ", C);
  return C > 0 ? (per_channel - 2) / 3 : 1;
}

// Channels are the fastest dim (channels last, or (N, C) viewed as (N, C, 1)).
inline bool channels_inner(const TensorView& t) {
  return t.size(1) > 1 && t.stride(1) == 1 && (t.stride(2) != 1 || t.size(2) == 1);
}

unsigned int per_channel_blocks(int64_t C) {
  return static_cast<unsigned int>((C + cuda::kThreads - 1) / cuda::kThreads);
}

}  // namespace

void batch_norm_forward_cuda(const TensorView& input, const OptView& weight, const OptView& bias,
                             const OptView& running_mean, const OptView& running_var,
                             const TensorView& output, const TensorView& save_mean,
                             const TensorView& save_invstd, const TensorView& workspace,
                             bool training, double momentum, double eps, uintptr_t stream) {
  const char* op = "batch_norm";
  batch_norm_check_forward(input, weight, bias, running_mean, running_var, output, save_mean,
                           save_invstd, training, eps);
  check_device(input, Device::CUDA, op, "input");
  check_same_device(input, workspace, op, "input", "workspace");
  const Geo geo{input.size(0), input.size(1), input.size(2)};
  if (geo.C == 0) return;
  const int64_t S = splits_of(workspace, geo.C, op);
  cuda::DeviceGuard guard(input);
  cudaStream_t st = cuda::as_stream(stream);
  double* partial = workspace.ptr<double>();
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    if (training) {
      const dim3 grid_stats(static_cast<unsigned int>(geo.C), static_cast<unsigned int>(S));
      if (channels_inner(input)) {
        const dim3 grid(static_cast<unsigned int>((geo.C + kRowsX - 1) / kRowsX),
                        static_cast<unsigned int>(S));
        batch_norm_moments_rows_kernel<T><<<grid, dim3(kRowsX, kRowsY), 0, st>>>(
            input.ptr<T>(), geo, str_of(input), S, partial);
        cuda::check_launch("batch_norm_moments_rows_kernel");
      } else {
        batch_norm_moments_planar_kernel<T><<<grid_stats, kPlanarThreads, 0, st>>>(
            input.ptr<T>(), geo, str_of(input), S, partial);
        cuda::check_launch("batch_norm_moments_planar_kernel");
      }
      batch_norm_finalize_kernel<T><<<per_channel_blocks(geo.C), cuda::kThreads, 0, st>>>(
          partial, geo.C, S, eps, momentum, running_mean ? running_mean->ptr<T>() : nullptr,
          running_mean ? running_mean->stride(0) : 0,
          running_var ? running_var->ptr<T>() : nullptr, running_var ? running_var->stride(0) : 0,
          save_mean.ptr<double>(), save_mean.stride(0), save_invstd.ptr<double>(),
          save_invstd.stride(0));
      cuda::check_launch("batch_norm_finalize_kernel");
    } else {
      batch_norm_eval_stats_kernel<T><<<per_channel_blocks(geo.C), cuda::kThreads, 0, st>>>(
          running_mean->ptr<T>(), running_mean->stride(0), running_var->ptr<T>(),
          running_var->stride(0), geo.C, eps, save_mean.ptr<double>(), save_mean.stride(0),
          save_invstd.ptr<double>(), save_invstd.stride(0));
      cuda::check_launch("batch_norm_eval_stats_kernel");
    }
    const int64_t total = input.numel();
    if (total == 0) return;
    const T* w = weight ? weight->ptr<T>() : nullptr;
    const T* b = bias ? bias->ptr<T>() : nullptr;
    const int64_t ws_ = weight ? weight->stride(0) : 0, bs_ = bias ? bias->stride(0) : 0;
    if (channels_inner(input)) {
      batch_norm_forward_kernel<T, true><<<cuda::blocks_for(total), cuda::kThreads, 0, st>>>(
          input.ptr<T>(), output.ptr<T>(), geo, str_of(input), str_of(output),
          save_mean.ptr<double>(), save_mean.stride(0), save_invstd.ptr<double>(),
          save_invstd.stride(0), w, ws_, b, bs_);
    } else {
      batch_norm_forward_kernel<T, false><<<cuda::blocks_for(total), cuda::kThreads, 0, st>>>(
          input.ptr<T>(), output.ptr<T>(), geo, str_of(input), str_of(output),
          save_mean.ptr<double>(), save_mean.stride(0), save_invstd.ptr<double>(),
          save_invstd.stride(0), w, ws_, b, bs_);
    }
    cuda::check_launch("batch_norm_forward_kernel");
  });
}

void batch_norm_backward_cuda(const TensorView& grad_output, const TensorView& input,
                              const OptView& weight, const TensorView& save_mean,
                              const TensorView& save_invstd, const OptView& grad_input,
                              const OptView& grad_weight, const OptView& grad_bias,
                              const TensorView& workspace, bool training, uintptr_t stream) {
  const char* op = "batch_norm_backward";
  batch_norm_check_backward(grad_output, input, weight, save_mean, save_invstd, grad_input,
                            grad_weight, grad_bias);
  check_device(input, Device::CUDA, op, "input");
  check_same_device(input, workspace, op, "input", "workspace");
  const Geo geo{input.size(0), input.size(1), input.size(2)};
  if (geo.C == 0) return;
  const int64_t S = splits_of(workspace, geo.C, op);
  cuda::DeviceGuard guard(input);
  cudaStream_t st = cuda::as_stream(stream);
  double* partial = workspace.ptr<double>();
  double* sums = partial + geo.C * S * 3;
  const bool need_sums = grad_weight || grad_bias || (grad_input && training);
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    if (need_sums) {
      if (channels_inner(input)) {
        const dim3 grid(static_cast<unsigned int>((geo.C + kRowsX - 1) / kRowsX),
                        static_cast<unsigned int>(S));
        batch_norm_grad_sums_rows_kernel<T><<<grid, dim3(kRowsX, kRowsY), 0, st>>>(
            grad_output.ptr<T>(), input.ptr<T>(), geo, str_of(grad_output), str_of(input),
            save_mean.ptr<double>(), save_mean.stride(0), S, partial);
        cuda::check_launch("batch_norm_grad_sums_rows_kernel");
      } else {
        const dim3 grid(static_cast<unsigned int>(geo.C), static_cast<unsigned int>(S));
        batch_norm_grad_sums_planar_kernel<T><<<grid, kPlanarThreads, 0, st>>>(
            grad_output.ptr<T>(), input.ptr<T>(), geo, str_of(grad_output), str_of(input),
            save_mean.ptr<double>(), save_mean.stride(0), S, partial);
        cuda::check_launch("batch_norm_grad_sums_planar_kernel");
      }
      batch_norm_grad_finalize_kernel<T><<<per_channel_blocks(geo.C), cuda::kThreads, 0, st>>>(
          partial, geo.C, S, save_invstd.ptr<double>(), save_invstd.stride(0), sums,
          grad_weight ? grad_weight->ptr<T>() : nullptr, grad_weight ? grad_weight->stride(0) : 0,
          grad_bias ? grad_bias->ptr<T>() : nullptr, grad_bias ? grad_bias->stride(0) : 0);
      cuda::check_launch("batch_norm_grad_finalize_kernel");
    }
    if (!grad_input || input.numel() == 0) return;
    const int64_t total = input.numel();
    const T* w = weight ? weight->ptr<T>() : nullptr;
    const int64_t ws_ = weight ? weight->stride(0) : 0;
    const double* sum_ptr = need_sums ? sums : nullptr;
    if (channels_inner(input)) {
      batch_norm_backward_kernel<T, true><<<cuda::blocks_for(total), cuda::kThreads, 0, st>>>(
          grad_output.ptr<T>(), input.ptr<T>(), grad_input->ptr<T>(), geo, str_of(grad_output),
          str_of(input), str_of(*grad_input), save_mean.ptr<double>(), save_mean.stride(0),
          save_invstd.ptr<double>(), save_invstd.stride(0), w, ws_, sum_ptr, training);
    } else {
      batch_norm_backward_kernel<T, false><<<cuda::blocks_for(total), cuda::kThreads, 0, st>>>(
          grad_output.ptr<T>(), input.ptr<T>(), grad_input->ptr<T>(), geo, str_of(grad_output),
          str_of(input), str_of(*grad_input), save_mean.ptr<double>(), save_mean.stride(0),
          save_invstd.ptr<double>(), save_invstd.stride(0), w, ws_, sum_ptr, training);
    }
    cuda::check_launch("batch_norm_backward_kernel");
  });
}

}  // namespace pynn
