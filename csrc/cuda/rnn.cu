// CUDA backend of the RNN / LSTM time loops (csrc/ops/rnn_loop.h): the host walks the time
// steps and enqueues, per step, one gemm_cuda and one fused pointwise kernel on the caller's
// stream; nothing synchronises inside the loop. The argument checks are shared with the CPU
// backend (csrc/cpu/rnn.cpp).
#include "core/cuda_utils.cuh"
#include "core/dispatch.h"
#include "cuda/gemm.cuh"
#include "math/rnn.h"
#include "ops/rnn.h"
#include "ops/rnn_loop.h"

namespace pynn {
namespace rnn {
namespace {

// One thread per (batch row, hidden unit) of a [batch, H] step, grid-stride.
#define PYNN_FOR_UNITS(n) \
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < (n); \
       idx += int64_t(gridDim.x) * blockDim.x)

template <class T>
__global__ void lstm_step_forward_kernel(int64_t batch, int64_t H, T* __restrict__ g,
                                         int64_t g_rs, const T* __restrict__ bi,
                                         const T* __restrict__ bh, const T* __restrict__ cp,
                                         int64_t cp_rs, T* __restrict__ c, int64_t c_rs,
                                         T* __restrict__ h, int64_t h_rs) {
  PYNN_FOR_UNITS(batch * H) {
    const int64_t b = idx / H, j = idx % H;
    T* gr = g + b * g_rs;
    T i = gr[j], f = gr[H + j], gg = gr[2 * H + j], o = gr[3 * H + j];
    if (bi) {
      i += bi[j] + bh[j];
      f += bi[H + j] + bh[H + j];
      gg += bi[2 * H + j] + bh[2 * H + j];
      o += bi[3 * H + j] + bh[3 * H + j];
    }
    T cv, hv;
    lstm_pointwise_forward(i, f, gg, o, cp[b * cp_rs + j], cv, hv);
    gr[j] = i;
    gr[H + j] = f;
    gr[2 * H + j] = gg;
    gr[3 * H + j] = o;
    c[b * c_rs + j] = cv;
    h[b * h_rs + j] = hv;
  }
}

template <class T>
__global__ void lstm_step_backward_kernel(int64_t batch, int64_t H, const T* __restrict__ da,
                                          int64_t da_rs, const T* __restrict__ db, int64_t db_rs,
                                          T* __restrict__ dc, int64_t dc_rs,
                                          const T* __restrict__ g, int64_t g_rs,
                                          const T* __restrict__ cp, int64_t cp_rs,
                                          const T* __restrict__ c, int64_t c_rs,
                                          T* __restrict__ dg, int64_t dg_rs) {
  PYNN_FOR_UNITS(batch * H) {
    const int64_t b = idx / H, j = idx % H;
    const T dh = (da ? da[b * da_rs + j] : T(0)) + (db ? db[b * db_rs + j] : T(0));
    const T* gr = g + b * g_rs;
    T* dgr = dg + b * dg_rs;
    T di, df, dgg, dout;
    dc[b * dc_rs + j] = lstm_pointwise_backward(dh, dc[b * dc_rs + j], gr[j], gr[H + j],
                                                gr[2 * H + j], gr[3 * H + j], cp[b * cp_rs + j],
                                                c[b * c_rs + j], di, df, dgg, dout);
    dgr[j] = di;
    dgr[H + j] = df;
    dgr[2 * H + j] = dgg;
    dgr[3 * H + j] = dout;
  }
}

template <ActKind K, class T>
__global__ void rnn_step_forward_kernel(int64_t batch, int64_t H, T* __restrict__ y, int64_t y_rs,
                                        const T* __restrict__ bi, const T* __restrict__ bh) {
  PYNN_FOR_UNITS(batch * H) {
    const int64_t b = idx / H, j = idx % H;
    T pre = y[b * y_rs + j];
    if (bi) pre += bi[j] + bh[j];
    y[b * y_rs + j] = rnn_pointwise_forward<K>(pre);
  }
}

template <ActKind K, class T>
__global__ void rnn_step_backward_kernel(int64_t batch, int64_t H, const T* __restrict__ dy,
                                         int64_t dy_rs, const T* __restrict__ dh, int64_t dh_rs,
                                         const T* __restrict__ y, int64_t y_rs,
                                         T* __restrict__ dp, int64_t dp_rs) {
  PYNN_FOR_UNITS(batch * H) {
    const int64_t b = idx / H, j = idx % H;
    const T g = (dy ? dy[b * dy_rs + j] : T(0)) + dh[b * dh_rs + j];
    dp[b * dp_rs + j] = rnn_pointwise_backward<K>(g, y[b * y_rs + j]);
  }
}

template <class T>
__global__ void rnn_add_kernel(int64_t rows, int64_t cols, const T* __restrict__ a, int64_t a_rs,
                               const T* __restrict__ b, int64_t b_rs, T* __restrict__ out,
                               int64_t out_rs) {
  PYNN_FOR_UNITS(rows * cols) {
    const int64_t r = idx / cols, j = idx % cols;
    out[r * out_rs + j] = (a ? a[r * a_rs + j] : T(0)) + (b ? b[r * b_rs + j] : T(0));
  }
}

template <class T>
__global__ void rnn_copy_kernel(int64_t rows, int64_t cols, const T* __restrict__ src,
                                int64_t src_rs, T* __restrict__ dst, int64_t dst_rs) {
  PYNN_FOR_UNITS(rows * cols) {
    const int64_t r = idx / cols, j = idx % cols;
    dst[r * dst_rs + j] = src ? src[r * src_rs + j] : T(0);
  }
}

// One thread per column; a warp reads 32 neighbouring columns of a row, so loads coalesce.
template <class T>
__global__ void rnn_col_sum_kernel(int64_t steps, int64_t batch, int64_t cols,
                                   const T* __restrict__ a, int64_t ts, int64_t bs,
                                   T* __restrict__ out1, T* __restrict__ out2) {
  using Acc = typename acc_type<T>::type;
  PYNN_FOR_UNITS(cols) {
    Acc acc = 0;
    for (int64_t t = 0; t < steps; ++t)
      for (int64_t b = 0; b < batch; ++b) acc += a[t * ts + b * bs + idx];
    out1[idx] = out2[idx] = static_cast<T>(acc);
  }
}

template <class T>
__global__ void rnn_dropout_kernel(int64_t n, const T* __restrict__ x, const T* __restrict__ m,
                                   T* __restrict__ y, T scale) {
  PYNN_FOR_UNITS(n) { y[idx] = x[idx] * m[idx] * scale; }
}

#undef PYNN_FOR_UNITS

template <class T>
struct CudaBackend {
  cudaStream_t stream;

  void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t a_rs, int64_t a_cs, const T* B,
            int64_t b_rs, int64_t b_cs, T beta, T* C, int64_t c_rs) {
    gemm_cuda<T>(1, M, N, K, T(1), A, 0, a_rs, a_cs, B, 0, b_rs, b_cs, beta, C, 0, c_rs, stream);
  }

  void lstm_step_forward(int64_t batch, int64_t H, Mat<T> g, const T* bi, const T* bh,
                         Mat<T> c_prev, Mat<T> c, Mat<T> h) {
    const int64_t n = batch * H;
    if (n == 0) return;
    lstm_step_forward_kernel<T><<<cuda::blocks_for(n), cuda::kThreads, 0, stream>>>(
        batch, H, g.p, g.rs, bi, bh, c_prev.p, c_prev.rs, c.p, c.rs, h.p, h.rs);
    cuda::check_launch("lstm_step_forward_kernel");
  }

  void lstm_step_backward(int64_t batch, int64_t H, Mat<T> dh_a, Mat<T> dh_b, Mat<T> dc,
                          Mat<T> g, Mat<T> c_prev, Mat<T> c, Mat<T> dg) {
    const int64_t n = batch * H;
    if (n == 0) return;
    lstm_step_backward_kernel<T><<<cuda::blocks_for(n), cuda::kThreads, 0, stream>>>(
        batch, H, dh_a.p, dh_a.rs, dh_b.p, dh_b.rs, dc.p, dc.rs, g.p, g.rs, c_prev.p, c_prev.rs,
        c.p, c.rs, dg.p, dg.rs);
    cuda::check_launch("lstm_step_backward_kernel");
  }

  void rnn_step_forward(int kind, int64_t batch, int64_t H, Mat<T> y, const T* bi, const T* bh) {
    const int64_t n = batch * H;
    if (n == 0) return;
    dispatch_rnn_nonlinearity(kind, "rnn_forward", [&](auto tag) {
      constexpr ActKind K = decltype(tag)::kind;
      rnn_step_forward_kernel<K, T><<<cuda::blocks_for(n), cuda::kThreads, 0, stream>>>(
          batch, H, y.p, y.rs, bi, bh);
      cuda::check_launch("rnn_step_forward_kernel");
    });
  }

  void rnn_step_backward(int kind, int64_t batch, int64_t H, Mat<T> dy, Mat<T> dh, Mat<T> y,
                         Mat<T> dpre) {
    const int64_t n = batch * H;
    if (n == 0) return;
    dispatch_rnn_nonlinearity(kind, "rnn_backward", [&](auto tag) {
      constexpr ActKind K = decltype(tag)::kind;
      rnn_step_backward_kernel<K, T><<<cuda::blocks_for(n), cuda::kThreads, 0, stream>>>(
          batch, H, dy.p, dy.rs, dh.p, dh.rs, y.p, y.rs, dpre.p, dpre.rs);
      cuda::check_launch("rnn_step_backward_kernel");
    });
  }

  void add(int64_t rows, int64_t cols, Mat<T> a, Mat<T> b, Mat<T> out) {
    const int64_t n = rows * cols;
    if (n == 0) return;
    rnn_add_kernel<T><<<cuda::blocks_for(n), cuda::kThreads, 0, stream>>>(
        rows, cols, a.p, a.rs, b.p, b.rs, out.p, out.rs);
    cuda::check_launch("rnn_add_kernel");
  }

  void copy(int64_t rows, int64_t cols, Mat<T> src, Mat<T> dst) {
    const int64_t n = rows * cols;
    if (n == 0 || (src.p == dst.p && src.rs == dst.rs)) return;
    rnn_copy_kernel<T><<<cuda::blocks_for(n), cuda::kThreads, 0, stream>>>(rows, cols, src.p,
                                                                             src.rs, dst.p, dst.rs);
    cuda::check_launch("rnn_copy_kernel");
  }

  // One GEMM and one fused kernel per step, all enqueued on the stream without waiting.
  void lstm_forward_recurrence(const LstmForwardSteps<T>& a) { lstm_forward_steps(*this, a); }
  void lstm_backward_recurrence(const LstmBackwardSteps<T>& a) { lstm_backward_steps(*this, a); }
  void rnn_forward_recurrence(const RnnForwardSteps<T>& a) { rnn_forward_steps(*this, a); }
  void rnn_backward_recurrence(const RnnBackwardSteps<T>& a) { rnn_backward_steps(*this, a); }

  void col_sum(int64_t steps, int64_t batch, int64_t cols, const Seq<T>& a, T* out1, T* out2) {
    if (cols == 0) return;
    rnn_col_sum_kernel<T><<<cuda::blocks_for(cols), cuda::kThreads, 0, stream>>>(
        steps, batch, cols, a.p, a.ts, a.bs, out1, out2);
    cuda::check_launch("rnn_col_sum_kernel");
  }
};

}  // namespace
}  // namespace rnn

void lstm_forward_cuda(const TensorView& x, const TensorView& h0, const TensorView& c0,
                       const TensorView& w_ih, const TensorView& w_hh, const TensorView& b_ih,
                       const TensorView& b_hh, const TensorView& w_hr, const TensorView& y,
                       const TensorView& hn, const TensorView& cn, const TensorView& gates,
                       const TensorView& cs, const TensorView& hr, bool reverse, bool saved,
                       uintptr_t stream) {
  rnn::check_lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, y, hn, cn, gates, cs, hr);
  check_device(x, Device::CUDA, "lstm_forward", "input");
  cuda::DeviceGuard guard(x);
  dispatch_floating(x.dtype, "lstm_forward", "input", [&](auto tag) {
    using T = decltype(tag);
    rnn::CudaBackend<T> be{cuda::as_stream(stream)};
    // the step loop writes every workspace whatever `saved` says
    rnn::lstm_forward_loop<T>(be, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, y, hn, cn, gates, cs,
                              hr, reverse, saved);
  });
}

void lstm_backward_cuda(const TensorView& x, const TensorView& h0, const TensorView& c0,
                        const TensorView& w_ih, const TensorView& w_hh, const TensorView& w_hr,
                        const TensorView& y, const TensorView& gates, const TensorView& cs,
                        const TensorView& hr, const TensorView& grad_y, const TensorView& grad_hn,
                        const TensorView& grad_cn, const TensorView& dgates, const TensorView& dy,
                        const TensorView& dhr, const TensorView& grad_x, const TensorView& grad_h0,
                        const TensorView& grad_c0, const TensorView& grad_w_ih,
                        const TensorView& grad_w_hh, const TensorView& grad_b_ih,
                        const TensorView& grad_b_hh, const TensorView& grad_w_hr, bool reverse,
                        bool accumulate_grad_x, uintptr_t stream) {
  rnn::check_lstm_backward(x, h0, c0, w_ih, w_hh, w_hr, y, gates, cs, hr, grad_y, grad_hn,
                           grad_cn, dgates, dy, dhr, grad_x, grad_h0, grad_c0, grad_w_ih,
                           grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr);
  check_device(x, Device::CUDA, "lstm_backward", "input");
  cuda::DeviceGuard guard(x);
  dispatch_floating(x.dtype, "lstm_backward", "input", [&](auto tag) {
    using T = decltype(tag);
    rnn::CudaBackend<T> be{cuda::as_stream(stream)};
    rnn::lstm_backward_loop<T>(be, x, h0, c0, w_ih, w_hh, w_hr, y, gates, cs, hr, grad_y,
                               grad_hn, grad_cn, dgates, dy, dhr, grad_x, grad_h0, grad_c0,
                               grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr, reverse,
                               accumulate_grad_x);
  });
}

void rnn_forward_cuda(const TensorView& x, const TensorView& h0, const TensorView& w_ih,
                      const TensorView& w_hh, const TensorView& b_ih, const TensorView& b_hh,
                      const TensorView& y, const TensorView& hn, int kind, bool reverse,
                      uintptr_t stream) {
  rnn::check_rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, y, hn, kind);
  check_device(x, Device::CUDA, "rnn_forward", "input");
  cuda::DeviceGuard guard(x);
  dispatch_floating(x.dtype, "rnn_forward", "input", [&](auto tag) {
    using T = decltype(tag);
    rnn::CudaBackend<T> be{cuda::as_stream(stream)};
    rnn::rnn_forward_loop<T>(be, x, h0, w_ih, w_hh, b_ih, b_hh, y, hn, kind, reverse);
  });
}

void rnn_backward_cuda(const TensorView& x, const TensorView& h0, const TensorView& w_ih,
                       const TensorView& w_hh, const TensorView& y, const TensorView& grad_y,
                       const TensorView& grad_hn, const TensorView& dgates,
                       const TensorView& grad_x, const TensorView& grad_h0,
                       const TensorView& grad_w_ih, const TensorView& grad_w_hh,
                       const TensorView& grad_b_ih, const TensorView& grad_b_hh, int kind,
                       bool reverse, bool accumulate_grad_x, uintptr_t stream) {
  rnn::check_rnn_backward(x, h0, w_ih, w_hh, y, grad_y, grad_hn, dgates, grad_x, grad_h0,
                          grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, kind);
  check_device(x, Device::CUDA, "rnn_backward", "input");
  cuda::DeviceGuard guard(x);
  dispatch_floating(x.dtype, "rnn_backward", "input", [&](auto tag) {
    using T = decltype(tag);
    rnn::CudaBackend<T> be{cuda::as_stream(stream)};
    rnn::rnn_backward_loop<T>(be, x, h0, w_ih, w_hh, y, grad_y, grad_hn, dgates, grad_x,
                              grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, kind, reverse,
                              accumulate_grad_x);
  });
}

void rnn_dropout_cuda(const TensorView& input, const TensorView& mask, const TensorView& output,
                      double scale, uintptr_t stream) {
  rnn::check_dropout(input, mask, output);
  check_device(input, Device::CUDA, "rnn_dropout", "input");
  const int64_t n = input.numel();
  if (n == 0) return;
  cuda::DeviceGuard guard(input);
  dispatch_floating(input.dtype, "rnn_dropout", "input", [&](auto tag) {
    using T = decltype(tag);
    rnn::rnn_dropout_kernel<T><<<cuda::blocks_for(n), cuda::kThreads, 0,
                                 cuda::as_stream(stream)>>>(n, input.ptr<T>(), mask.ptr<T>(),
                                                            output.ptr<T>(), static_cast<T>(scale));
    cuda::check_launch("rnn_dropout_kernel");
  });
}

}  // namespace pynn
