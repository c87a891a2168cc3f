// MSE and cross-entropy on the GPU. A reduced loss takes two launches: the main kernel leaves one
// row of double partial sums per block in `workspace` (allocated by torch in Python), and a
// one-block kernel adds the rows in a fixed order, so the result is deterministic, and writes
// the loss and `stats`. The backward reads the scalar grad_output and `stats` from device
// memory, so nothing waits on the host.
#include <climits>
#include <limits>

#include "core/cuda_utils.cuh"
#include "core/dispatch.h"
#include "cuda/softmax.cuh"
#include "math/loss.h"
#include "math/softmax.h"
#include "ops/loss.h"

namespace pynn {
namespace {

// Sums v over the block; the result is valid in thread 0. Every thread of the block must call it.
template <int S>
__device__ void block_sum(double (&v)[S]) {
  __shared__ double partial[S][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int s = 0; s < S; ++s) v[s] = cuda::group_sum<32>(v[s]);
  if (lane == 0)
#pragma unroll
    for (int s = 0; s < S; ++s) partial[s][warp] = v[s];
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x >> 5;
#pragma unroll
    for (int s = 0; s < S; ++s) v[s] = cuda::group_sum<32>(lane < warps ? partial[s][lane] : 0.0);
  }
}

template <int S>
__device__ void store_block_partials(double (&v)[S], double* workspace) {
  block_sum<S>(v);
  if (threadIdx.x == 0)
#pragma unroll
    for (int s = 0; s < S; ++s) workspace[blockIdx.x * S + s] = v[s];
}

// One block: adds the `rows` rows of partial sums into v (valid in thread 0).
template <int S>
__device__ void sum_partials(const double* workspace, int rows, double (&v)[S]) {
#pragma unroll
  for (int s = 0; s < S; ++s) v[s] = 0.0;
  for (int r = threadIdx.x; r < rows; r += blockDim.x)
#pragma unroll
    for (int s = 0; s < S; ++s) v[s] += workspace[r * S + s];
  block_sum<S>(v);
}

unsigned int reduce_grid(int64_t work, const TensorView& workspace) {
  return static_cast<unsigned int>(
      std::min<int64_t>(cuda::blocks_for(work), std::max<int64_t>(1, workspace.sizes[0])));
}

// ------------------------------------------------------------------------------------ MSE

template <class T>
__global__ void mse_loss_none_kernel(const T* __restrict__ x, const T* __restrict__ t,
                                     const T* __restrict__ w, T* __restrict__ out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = w ? w[i] * mse_term(x[i], t[i]) : mse_term(x[i], t[i]);
}

template <class T>
__global__ void mse_loss_reduce_kernel(const T* __restrict__ x, const T* __restrict__ t,
                                       const T* __restrict__ w, int64_t n,
                                       double* __restrict__ workspace) {
  double v[2] = {0.0, 0.0};
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const double se = static_cast<double>(mse_term(x[i], t[i]));
    v[0] += w ? double(w[i]) * se : se;
    v[1] += w ? double(w[i]) : 1.0;
  }
  store_block_partials<2>(v, workspace);
}

template <class T>
__global__ void mse_loss_finalize_kernel(const double* __restrict__ workspace, int rows,
                                         T* __restrict__ out, double* __restrict__ stats,
                                         bool mean, bool weighted, double repeat, int64_t n) {
  double v[2];
  sum_partials<2>(workspace, rows, v);
  if (threadIdx.x == 0) {
    stats[0] = v[0];
    stats[1] = v[1];
    const double denom = weighted ? v[1] / repeat : double(n);
    out[0] = static_cast<T>(mean ? v[0] / denom : v[0]);
  }
}

template <class T>
__global__ void mse_loss_backward_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                         const T* __restrict__ t, const T* __restrict__ w,
                                         const double* __restrict__ stats, T* __restrict__ gx,
                                         T* __restrict__ gt, T* __restrict__ gw, int64_t n,
                                         int reduction, double repeat) {
  const Reduction red = static_cast<Reduction>(reduction);
  // Mirrors mse_loss_backward_cpu: see there for the weighted mean's weight gradient.
  double denom = 1.0, loss_over_repeat = 0.0;
  if (red == Reduction::Mean) {
    denom = w ? stats[1] / repeat : double(n);
    loss_over_repeat = stats[0] / denom / repeat;
  }
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const T go = red == Reduction::None ? g[i] : static_cast<T>(double(g[0]) / denom);
    const T gxi = mse_grad(x[i], t[i], w ? go * w[i] : go);
    if (gx) gx[i] = gxi;
    if (gt) gt[i] = -gxi;
    if (gw) {
      const T se = mse_term(x[i], t[i]);
      gw[i] = go * (red == Reduction::Mean ? se - static_cast<T>(loss_over_repeat) : se);
    }
  }
}

// ---------------------------------------------------------------------------- cross-entropy

// One sample (row of C classes, stride K) per group of L lanes, as in cuda/softmax.cuh.
// Class targets out of [0, C) that are not ignore_index are never used as an address: the
// sample's loss becomes NaN and its index is recorded (smallest wins) in *status.
template <int L, bool Prob, bool Reduce, class T>
__global__ void cross_entropy_forward_kernel(const T* __restrict__ x, const int64_t* __restrict__ tc,
                                             const T* __restrict__ tp, const T* __restrict__ w,
                                             T* __restrict__ lp, T* __restrict__ loss,
                                             double* __restrict__ workspace,
                                             unsigned long long* __restrict__ status,
                                             int64_t samples, int64_t C, int64_t K,
                                             int64_t ignore_index, T smoothing, T inv_c) {
  double acc[kNumStats] = {0.0, 0.0, 0.0};
  for (cuda::RowCursor<L> cur; cur.row < samples; cur.row += cur.step) {
    const int64_t i = cur.row;
    const int64_t base = (i / K) * C * K + i % K;
    const T* xr = x + base;
    T* lr = lp + base;
    T m = -std::numeric_limits<T>::infinity();
    for (int64_t c = cur.lane; c < C; c += L) m = max_step(m, xr[c * K]);
    m = cuda::group_max<L>(m);
    T s = T(0);
    for (int64_t c = cur.lane; c < C; c += L) s += exp(xr[c * K] - m);
    const T log_s = log(cuda::group_sum<L>(s));
    T term = T(0);  // the part of -sum w q lp (prob) or of the smoothing sum this lane owns
    for (int64_t c = cur.lane; c < C; c += L) {
      const T l = softmax_output<true>(xr[c * K], m, T(0), log_s);
      lr[c * K] = l;
      const T wc = w ? w[c] : T(1);
      if (Prob) term -= smoothed_target(tp[base + c * K], smoothing, inv_c) * wc * l;
      else if (smoothing > T(0)) term -= wc * l;
    }
    term = cuda::group_sum<L>(term);
    T value, nll = T(0), wt = T(0);
    if (Prob) {
      value = term;
    } else {
      const int64_t t = tc[i];
      const TargetKind kind = classify_target(t, C, ignore_index);
      if (kind == TargetKind::OutOfRange) {
        if (cur.lane == 0) atomicMin(status, static_cast<unsigned long long>(i));
        value = nll = std::numeric_limits<T>::quiet_NaN();
      } else if (kind == TargetKind::Ignored) {
        value = term = T(0);
      } else {
        wt = w ? w[t] : T(1);
        nll = -wt * softmax_output<true>(xr[t * K], m, T(0), log_s);
        value = class_loss(nll, term, smoothing, inv_c);
      }
    }
    if (cur.lane == 0) {
      if (Reduce) {
        acc[kStatLoss] += Prob ? double(value) : double(nll);
        acc[kStatWeight] += double(wt);
        acc[kStatSmooth] += Prob ? 0.0 : double(term);
      } else {
        loss[i] = value;
      }
    }
  }
  if (Reduce) store_block_partials<kNumStats>(acc, workspace);
}

template <class T>
__global__ void cross_entropy_finalize_kernel(const double* __restrict__ workspace, int rows,
                                              T* __restrict__ loss, double* __restrict__ stats,
                                              int reduction, bool prob, int64_t samples,
                                              double smoothing, double inv_c) {
  double v[kNumStats];
  sum_partials<kNumStats>(workspace, rows, v);
  if (threadIdx.x == 0) {
    for (int s = 0; s < kNumStats; ++s) stats[s] = v[s];
    const Reduction red = static_cast<Reduction>(reduction);
    double r;
    if (prob)
      r = red == Reduction::Mean ? v[kStatLoss] / double(samples) : v[kStatLoss];
    else
      r = class_loss_reduced<double>(red, v[kStatLoss], v[kStatWeight], v[kStatSmooth],
                                     smoothing, inv_c);
    loss[0] = static_cast<T>(r);
  }
}

template <int L, bool Prob, class T>
__global__ void cross_entropy_backward_kernel(const T* __restrict__ g, const T* __restrict__ lp,
                                              const int64_t* __restrict__ tc,
                                              const T* __restrict__ tp, const T* __restrict__ w,
                                              const double* __restrict__ stats,
                                              T* __restrict__ gi, T* __restrict__ gt,
                                              int64_t samples, int64_t C, int64_t K,
                                              int reduction, int64_t ignore_index, T smoothing,
                                              T inv_c) {
  const Reduction red = static_cast<Reduction>(reduction);
  double scale = 1.0;
  if (red == Reduction::Mean) scale = 1.0 / (Prob ? double(samples) : stats[kStatWeight]);
  for (cuda::RowCursor<L> cur; cur.row < samples; cur.row += cur.step) {
    const int64_t i = cur.row;
    const int64_t base = (i / K) * C * K + i % K;
    const T* l = lp + base;
    T* gx = gi + base;
    const double go = double(red == Reduction::None ? g[i] : g[0]) * scale;
    if (Prob) {
      const T coef = static_cast<T>(go);
      T sum_wq = T(0);
      for (int64_t c = cur.lane; c < C; c += L)
        sum_wq += smoothed_target(tp[base + c * K], smoothing, inv_c) * (w ? w[c] : T(1));
      sum_wq = cuda::group_sum<L>(sum_wq);
      for (int64_t c = cur.lane; c < C; c += L) {
        const T wc = w ? w[c] : T(1);
        const T wq = smoothed_target(tp[base + c * K], smoothing, inv_c) * wc;
        gx[c * K] = prob_grad(exp(l[c * K]), wq, sum_wq, coef);
        if (gt) gt[base + c * K] = prob_grad_target(l[c * K], wc, smoothing, coef);
      }
      continue;
    }
    const int64_t t = tc[i];
    if (classify_target(t, C, ignore_index) != TargetKind::Valid) {
      for (int64_t c = cur.lane; c < C; c += L) gx[c * K] = T(0);
      continue;
    }
    T wall = T(C);
    if (w && smoothing > T(0)) {
      wall = T(0);
      for (int64_t c = cur.lane; c < C; c += L) wall += w[c];
      wall = cuda::group_sum<L>(wall);
    }
    const T a = static_cast<T>(go * (1.0 - double(smoothing)));
    const T b = static_cast<T>(go * double(smoothing) * double(inv_c));
    const T wt = w ? w[t] : T(1);
    for (int64_t c = cur.lane; c < C; c += L)
      gx[c * K] = class_grad(exp(l[c * K]), c == t, wt, w ? w[c] : T(1), a, b, wall);
  }
}

template <class T>
const T* opt_ptr(const OptView& v) {
  return v ? v->ptr<T>() : nullptr;
}
template <class T>
T* opt_mut(const OptView& v) {
  return v ? v->ptr<T>() : nullptr;
}

void check_workspace(const TensorView& ref, const OptView& workspace, int slots, const char* op) {
  PYNN_CHECK(workspace.has_value(), op, ": a reduced loss on CUDA needs a workspace");
  check_same_device(ref, *workspace, op, "input", "workspace");
  PYNN_CHECK_TYPE(workspace->dtype == DType::Float64, op, ": workspace must be float64");
  PYNN_CHECK(workspace->dim == 2 && workspace->sizes[1] == slots && workspace->sizes[0] >= 1 &&
                 workspace->is_contiguous(),
             op, ": workspace must be contiguous with shape [blocks, ", slots, "], got ",
             workspace->shape_str());
}

template <class F>
void dispatch_lanes(int64_t inner, F&& f) {
  if (inner == 1) f(std::integral_constant<int, 32>{});
  else f(std::integral_constant<int, 1>{});
}

template <class F>
void dispatch_bool(bool b, F&& f) {
  if (b) f(std::true_type{});
  else f(std::false_type{});
}

}  // namespace

// ------------------------------------------------------------------------------ launchers

void mse_loss_forward_cuda(const TensorView& input, const TensorView& target,
                           const OptView& weight, const TensorView& output,
                           const TensorView& stats, const OptView& workspace, int reduction,
                           double weight_repeat, uintptr_t stream) {
  const char* op = "mse_loss_forward";
  const MseShape s = mse_check(input, target, weight, output, stats, reduction, op, "output");
  const Reduction red = static_cast<Reduction>(reduction);
  if (red != Reduction::None) check_workspace(input, workspace, 2, op);
  if (red == Reduction::None && s.n == 0) return;
  cuda::DeviceGuard guard(input);
  const cudaStream_t st = cuda::as_stream(stream);
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    const T* w = opt_ptr<T>(weight);
    if (red == Reduction::None) {
      mse_loss_none_kernel<T><<<cuda::blocks_for(s.n), cuda::kThreads, 0, st>>>(
          input.ptr<T>(), target.ptr<T>(), w, output.ptr<T>(), s.n);
      cuda::check_launch("mse_loss_none_kernel");
      return;
    }
    const unsigned int grid = reduce_grid(s.n, *workspace);
    mse_loss_reduce_kernel<T><<<grid, cuda::kThreads, 0, st>>>(
        input.ptr<T>(), target.ptr<T>(), w, s.n, workspace->ptr<double>());
    cuda::check_launch("mse_loss_reduce_kernel");
    mse_loss_finalize_kernel<T><<<1, cuda::kThreads, 0, st>>>(
        workspace->ptr<double>(), static_cast<int>(grid), output.ptr<T>(), stats.ptr<double>(),
        red == Reduction::Mean, w != nullptr, weight_repeat, s.n);
    cuda::check_launch("mse_loss_finalize_kernel");
  });
}

void mse_loss_backward_cuda(const TensorView& grad_output, const TensorView& input,
                            const TensorView& target, const OptView& weight,
                            const TensorView& stats, const OptView& grad_input,
                            const OptView& grad_target, const OptView& grad_weight, int reduction,
                            double weight_repeat, uintptr_t stream) {
  const char* op = "mse_loss_backward";
  const MseShape s = mse_check(input, target, weight, grad_output, stats, reduction, op,
                               "grad_output");
  for (const OptView* g : {&grad_input, &grad_target, &grad_weight})
    if (*g) {
      check_defined(**g, op, "a gradient");
      check_same_dtype(input, **g, op, "input", "a gradient");
      check_same_device(input, **g, op, "input", "a gradient");
      check_contiguous(**g, op, "a gradient");
      check_same_shape(input, **g, op, "input", "a gradient");
    }
  PYNN_CHECK(!grad_weight || weight, op, ": grad_weight needs weight");
  if (s.n == 0) return;
  cuda::DeviceGuard guard(input);
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    mse_loss_backward_kernel<T><<<cuda::blocks_for(s.n), cuda::kThreads, 0,
                                  cuda::as_stream(stream)>>>(
        grad_output.ptr<T>(), input.ptr<T>(), target.ptr<T>(), opt_ptr<T>(weight),
        stats.ptr<double>(), opt_mut<T>(grad_input), opt_mut<T>(grad_target),
        opt_mut<T>(grad_weight), s.n, reduction, weight_repeat);
    cuda::check_launch("mse_loss_backward_kernel");
  });
}

void cross_entropy_forward_cuda(const TensorView& input, const TensorView& target,
                                const OptView& weight, const TensorView& log_probs,
                                const TensorView& loss, const TensorView& stats,
                                const OptView& workspace, const OptView& status, int reduction,
                                int64_t ignore_index, double label_smoothing, uintptr_t stream) {
  const char* op = "cross_entropy_forward";
  const CeShape s = ce_check(input, target, weight, stats, reduction, label_smoothing, op, "input");
  check_same_dtype(input, log_probs, op, "input", "log_probs");
  check_same_device(input, log_probs, op, "input", "log_probs");
  check_contiguous(log_probs, op, "log_probs");
  check_same_shape(input, log_probs, op, "input", "log_probs");
  check_same_dtype(input, loss, op, "input", "loss");
  check_same_device(input, loss, op, "input", "loss");
  check_contiguous(loss, op, "loss");
  const int64_t samples = s.n * s.inner;
  const Reduction red = static_cast<Reduction>(reduction);
  PYNN_CHECK(loss.numel() == (red == Reduction::None ? samples : 1), op,
             ": loss has the wrong number of elements for this reduction: ", loss.shape_str());
  if (red != Reduction::None) check_workspace(input, workspace, kNumStats, op);
  if (!s.prob) {
    PYNN_CHECK(status.has_value() && status->dtype == DType::Int64 && status->numel() >= 1, op,
               ": class targets on CUDA need a one-element int64 status tensor");
    check_same_device(input, *status, op, "input", "status");
  }
  if (red == Reduction::None && samples == 0) return;
  cuda::DeviceGuard guard(input);
  const cudaStream_t st = cuda::as_stream(stream);
  unsigned long long* flag = s.prob ? nullptr : status->ptr<unsigned long long>();
  // All bits set: no bad target seen (the kernel keeps the smallest bad sample index).
  if (flag) cuda::check(cudaMemsetAsync(flag, 0xff, sizeof(*flag), st), "cudaMemsetAsync(status)");
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    const T smoothing = static_cast<T>(label_smoothing);
    const T inv_c = static_cast<T>(1.0 / double(s.classes));
    unsigned int grid = 1;
    dispatch_lanes(s.inner, [&](auto lanes) {
      constexpr int L = decltype(lanes)::value;
      grid = red == Reduction::None ? cuda::blocks_for(samples * L)
                                    : reduce_grid(samples * L, *workspace);
      dispatch_bool(s.prob, [&](auto prob) {
        dispatch_bool(red != Reduction::None, [&](auto reduce) {
          cross_entropy_forward_kernel<L, decltype(prob)::value, decltype(reduce)::value, T>
              <<<grid, cuda::kThreads, 0, st>>>(
                  input.ptr<T>(), s.prob ? nullptr : target.ptr<int64_t>(),
                  s.prob ? target.ptr<T>() : nullptr, opt_ptr<T>(weight), log_probs.ptr<T>(),
                  loss.ptr<T>(), workspace ? workspace->ptr<double>() : nullptr, flag, samples,
                  s.classes, s.inner, ignore_index, smoothing, inv_c);
          cuda::check_launch("cross_entropy_forward_kernel");
        });
      });
    });
    if (red != Reduction::None) {
      cross_entropy_finalize_kernel<T><<<1, cuda::kThreads, 0, st>>>(
          workspace->ptr<double>(), static_cast<int>(grid), loss.ptr<T>(), stats.ptr<double>(),
          reduction, s.prob, samples, label_smoothing, 1.0 / double(s.classes));
      cuda::check_launch("cross_entropy_finalize_kernel");
    }
  });
  if (!flag) return;
  // The one host synchronisation of the op: a bad class index must raise here, like torch's
  // IndexError on the CPU, rather than poison later results or kill the CUDA context.
  unsigned long long bad = ULLONG_MAX;
  cuda::check(cudaMemcpyAsync(&bad, flag, sizeof(bad), cudaMemcpyDeviceToHost, st),
              "cudaMemcpyAsync(status)");
  cuda::check(cudaStreamSynchronize(st), "cudaStreamSynchronize");
  if (bad == ULLONG_MAX) return;
  int64_t value = 0;
  cuda::check(cudaMemcpyAsync(&value, target.ptr<int64_t>() + bad, sizeof(value),
                              cudaMemcpyDeviceToHost, st),
              "cudaMemcpyAsync(target)");
  cuda::check(cudaStreamSynchronize(st), "cudaStreamSynchronize");
  throw ValueError(detail::concat("cross_entropy: target ", value, " is out of bounds (class ",
                                  "indices must be in [0, ", s.classes,
                                  ") or equal ignore_index=", ignore_index, ")"));
}

void cross_entropy_backward_cuda(const TensorView& grad_output, const TensorView& log_probs,
                                 const TensorView& target, const OptView& weight,
                                 const TensorView& stats, const TensorView& grad_input,
                                 const OptView& grad_target, int reduction, int64_t ignore_index,
                                 double label_smoothing, uintptr_t stream) {
  const char* op = "cross_entropy_backward";
  const CeShape s =
      ce_check(log_probs, target, weight, stats, reduction, label_smoothing, op, "log_probs");
  const int64_t samples = s.n * s.inner;
  const Reduction red = static_cast<Reduction>(reduction);
  check_same_dtype(log_probs, grad_output, op, "log_probs", "grad_output");
  check_same_device(log_probs, grad_output, op, "log_probs", "grad_output");
  check_contiguous(grad_output, op, "grad_output");
  PYNN_CHECK(grad_output.numel() == (red == Reduction::None ? samples : 1), op,
             ": grad_output has the wrong number of elements: ", grad_output.shape_str());
  for (const OptView& gv : {OptView(grad_input), grad_target})
    if (gv) {
      check_same_dtype(log_probs, *gv, op, "log_probs", "a gradient");
      check_same_device(log_probs, *gv, op, "log_probs", "a gradient");
      check_contiguous(*gv, op, "a gradient");
      check_same_shape(log_probs, *gv, op, "log_probs", "a gradient");
    }
  PYNN_CHECK(!grad_target || s.prob, op, ": grad_target exists only for probability targets");
  if (samples == 0 || s.classes == 0) return;
  cuda::DeviceGuard guard(log_probs);
  dispatch_floating(log_probs.dtype, op, "log_probs", [&](auto tag) {
    using T = decltype(tag);
    const T smoothing = static_cast<T>(label_smoothing);
    const T inv_c = static_cast<T>(1.0 / double(s.classes));
    dispatch_lanes(s.inner, [&](auto lanes) {
      constexpr int L = decltype(lanes)::value;
      dispatch_bool(s.prob, [&](auto prob) {
        cross_entropy_backward_kernel<L, decltype(prob)::value, T>
            <<<cuda::blocks_for(samples * L), cuda::kThreads, 0, cuda::as_stream(stream)>>>(
                grad_output.ptr<T>(), log_probs.ptr<T>(),
                s.prob ? nullptr : target.ptr<int64_t>(), s.prob ? target.ptr<T>() : nullptr,
                opt_ptr<T>(weight), stats.ptr<double>(), grad_input.ptr<T>(),
                opt_mut<T>(grad_target), samples, s.classes, s.inner, reduction, ignore_index,
                smoothing, inv_c);
        cuda::check_launch("cross_entropy_backward_kernel");
      });
    });
  });
}

}  // namespace pynn
