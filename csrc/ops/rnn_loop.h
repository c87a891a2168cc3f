#pragma once
// The time loops of the RNN and LSTM layers, written once and instantiated for the CPU
// (csrc/cpu/rnn.cpp) and CUDA (csrc/cuda/rnn.cu) backends, so the CPU tests exercise the very
// sequence of GEMMs and pointwise steps the GPU runs. A backend supplies:
//   gemm(M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, beta, C, c_rs)     C = A @ B + beta * C
//   lstm_step_forward / lstm_step_backward / rnn_step_forward / rnn_step_backward  (fused
//       pointwise work of one time step, math in csrc/math/rnn.h)
//   add(rows, cols, a, b, out)   out = a + b (a null operand reads as zero)
//   copy(rows, cols, src, dst)   dst = src (a null src writes zeros)
//   col_sum(steps, batch, cols, a, out1, out2)   bias gradients: column sums over steps and batch
//
// Structure (why it is fast): the input projection of every step is one GEMM before the loop;
// the loop does one recurrent GEMM and one fused pointwise pass per step; the backward keeps
// only the recurrent GEMM inside the loop and forms grad_x and all weight gradients with GEMMs
// over every step at once afterwards.
#include <cstdint>

#include "core/tensor.h"

namespace pynn {
namespace rnn {

// A matrix with unit column stride (every per-step operand): row r starts at p + r * rs.
template <class T>
struct Mat {
  T* p = nullptr;
  int64_t rs = 0;
  T* row(int64_t r) const { return p + r * rs; }
};

// A [steps, batch, width] sequence with unit column stride.
template <class T>
struct Seq {
  T* p = nullptr;
  int64_t ts = 0, bs = 0;
  Mat<T> at(int64_t t) const { return {p ? p + t * ts : nullptr, bs}; }
  Seq from(int64_t t) const { return {p ? p + t * ts : nullptr, ts, bs}; }
};

template <class T>
Mat<T> mat(const TensorView& v) {
  if (v.numel() == 0) return {};
  return {v.ptr<T>(), v.dim >= 2 ? v.stride(-2) : 0};
}

template <class T>
Seq<T> seq(const TensorView& v) {
  if (v.numel() == 0) return {};
  return {v.ptr<T>(), v.stride(0), v.stride(1)};
}

template <class T>
T* ptr_or_null(const TensorView& v) {
  return v.numel() == 0 ? nullptr : v.ptr<T>();
}

// Row stride of the steps * batch rows of `s` seen as one matrix (row t * batch + b), or -1 when
// its strides do not allow that.
template <class T>
int64_t flat_row_stride(const Seq<T>& s, int64_t steps, int64_t batch) {
  if (batch == 1) return s.ts;
  if (steps == 1 || s.ts == batch * s.bs) return s.bs;
  return -1;
}

// C[t] = X[t] @ W + beta * C[t] for every step: one GEMM over all steps when both sequences
// flatten, else one per step. W is N-wide with strides (w_rs, w_cs).
template <class T, class Be>
void gemm_steps(Be& be, int64_t steps, int64_t batch, int64_t N, int64_t K, const Seq<T>& X,
                const T* W, int64_t w_rs, int64_t w_cs, T beta, const Seq<T>& C) {
  const int64_t xrs = flat_row_stride(X, steps, batch), crs = flat_row_stride(C, steps, batch);
  if (xrs >= 0 && crs >= 0) {
    be.gemm(steps * batch, N, K, X.p, xrs, 1, W, w_rs, w_cs, beta, C.p, crs);
    return;
  }
  for (int64_t t = 0; t < steps; ++t)
    be.gemm(batch, N, K, X.at(t).p, X.bs, 1, W, w_rs, w_cs, beta, C.at(t).p, C.bs);
}

// C[M, N] = sum over steps and batch of A[t, b, :]^T (x) X[t, b, :] + beta * C: a weight gradient
// as one GEMM with K = steps * batch when both sequences flatten.
template <class T, class Be>
void gemm_sum_steps(Be& be, int64_t steps, int64_t batch, int64_t M, int64_t N, const Seq<T>& A,
                    const Seq<T>& X, T beta, T* C, int64_t c_rs) {
  const int64_t ars = flat_row_stride(A, steps, batch), xrs = flat_row_stride(X, steps, batch);
  if (ars >= 0 && xrs >= 0) {
    be.gemm(M, N, steps * batch, A.p, 1, ars, X.p, xrs, 1, beta, C, c_rs);
    return;
  }
  for (int64_t t = 0; t < steps; ++t)
    be.gemm(M, N, batch, A.at(t).p, 1, A.bs, X.at(t).p, X.bs, 1, t == 0 ? beta : T(1), C, c_rs);
}

// The gradients every layer kind shares once dgates (gradient of the pre-activations, G wide)
// is known for all steps: grad_x = dgates @ W_ih, grad_w_ih = sum dgates^T x, grad_w_hh =
// sum dgates^T h_prev (h_prev: the output of the previous step, h0 at the first), bias = column
// sums. P is the width of h.
template <class T, class Be>
void input_and_weight_grads(Be& be, int64_t steps, int64_t batch, int64_t G, int64_t I,
                            int64_t P, const Seq<T>& X, const Seq<T>& dG, const Seq<T>& Y,
                            const TensorView& h0, const TensorView& w_ih,
                            const TensorView& grad_x, const TensorView& grad_w_ih,
                            const TensorView& grad_w_hh, const TensorView& grad_b_ih,
                            const TensorView& grad_b_hh, bool reverse, bool accumulate_grad_x) {
  if (grad_x.numel() > 0)
    gemm_steps(be, steps, batch, I, G, dG, w_ih.ptr<T>(), w_ih.stride(0), w_ih.stride(1),
               accumulate_grad_x ? T(1) : T(0), seq<T>(grad_x));
  gemm_sum_steps(be, steps, batch, G, I, dG, X, T(0), grad_w_ih.ptr<T>(), grad_w_ih.stride(0));
  // Step t of the forward direction saw h_{t-1} = Y[t-1]; of the reverse direction Y[t+1].
  if (steps > 1) {
    if (reverse)
      gemm_sum_steps(be, steps - 1, batch, G, P, dG, Y.from(1), T(0), grad_w_hh.ptr<T>(),
                     grad_w_hh.stride(0));
    else
      gemm_sum_steps(be, steps - 1, batch, G, P, dG.from(1), Y, T(0), grad_w_hh.ptr<T>(),
                     grad_w_hh.stride(0));
  }
  const int64_t first = reverse ? steps - 1 : 0;
  be.gemm(G, P, batch, dG.at(first).p, 1, dG.bs, ptr_or_null<T>(h0), h0.stride(0), h0.stride(1),
          steps > 1 ? T(1) : T(0), grad_w_hh.ptr<T>(), grad_w_hh.stride(0));
  if (grad_b_ih.numel() > 0)
    be.col_sum(steps, batch, G, dG, grad_b_ih.ptr<T>(), grad_b_hh.ptr<T>());
}

template <class T, class Be>
void lstm_forward_loop(Be& be, const TensorView& x, const TensorView& h0, const TensorView& c0,
                       const TensorView& w_ih, const TensorView& w_hh, const TensorView& b_ih,
                       const TensorView& b_hh, const TensorView& w_hr, const TensorView& y,
                       const TensorView& hn, const TensorView& cn, const TensorView& gates,
                       const TensorView& cs, const TensorView& hr, bool reverse) {
  const int64_t steps = x.size(0), batch = x.size(1), I = x.size(2);
  const int64_t H = cs.size(2), P = y.size(2), G = 4 * H;
  const bool proj = w_hr.numel() > 0;
  const Seq<T> X = seq<T>(x), Y = seq<T>(y), Gt = seq<T>(gates), C = seq<T>(cs), HR = seq<T>(hr);
  const T* bi = ptr_or_null<T>(b_ih);
  const T* bh = ptr_or_null<T>(b_hh);
  // Input projection of every step at once; W_ih^T is W_ih read with swapped strides.
  gemm_steps(be, steps, batch, G, I, X, w_ih.ptr<T>(), w_ih.stride(1), w_ih.stride(0), T(0), Gt);
  Mat<T> h_prev = mat<T>(h0), c_prev = mat<T>(c0);
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    be.gemm(batch, G, P, h_prev.p, h_prev.rs, 1, w_hh.ptr<T>(), w_hh.stride(1), w_hh.stride(0),
            T(1), Gt.at(t).p, Gt.bs);
    be.lstm_step_forward(batch, H, Gt.at(t), bi, bh, c_prev, C.at(t), proj ? HR.at(t) : Y.at(t));
    if (proj)
      be.gemm(batch, P, H, HR.at(t).p, HR.bs, 1, w_hr.ptr<T>(), w_hr.stride(1), w_hr.stride(0),
              T(0), Y.at(t).p, Y.bs);
    h_prev = Y.at(t);
    c_prev = C.at(t);
  }
  be.copy(batch, P, h_prev, mat<T>(hn));
  be.copy(batch, H, c_prev, mat<T>(cn));
}

template <class T, class Be>
void lstm_backward_loop(Be& be, const TensorView& x, const TensorView& h0, const TensorView& c0,
                        const TensorView& w_ih, const TensorView& w_hh, const TensorView& w_hr,
                        const TensorView& y, const TensorView& gates, const TensorView& cs,
                        const TensorView& hr, const TensorView& grad_y,
                        const TensorView& grad_hn, const TensorView& grad_cn,
                        const TensorView& dgates, const TensorView& dy, const TensorView& dhr,
                        const TensorView& grad_x, const TensorView& grad_h0,
                        const TensorView& grad_c0, const TensorView& grad_w_ih,
                        const TensorView& grad_w_hh, const TensorView& grad_b_ih,
                        const TensorView& grad_b_hh, const TensorView& grad_w_hr, bool reverse,
                        bool accumulate_grad_x) {
  const int64_t steps = x.size(0), batch = x.size(1), I = x.size(2);
  const int64_t H = cs.size(2), P = y.size(2), G = 4 * H;
  const bool proj = w_hr.numel() > 0;
  const Seq<T> X = seq<T>(x), Y = seq<T>(y), Gt = seq<T>(gates), C = seq<T>(cs), HR = seq<T>(hr);
  const Seq<T> GY = seq<T>(grad_y), dG = seq<T>(dgates), DY = seq<T>(dy);
  // The gradients flowing back into h and c live in grad_h0 / grad_c0 for the whole loop and
  // hold the answer for the initial state when it ends.
  const Mat<T> dh = mat<T>(grad_h0), dc = mat<T>(grad_c0), dhr_m = mat<T>(dhr);
  be.copy(batch, P, mat<T>(grad_hn), dh);
  be.copy(batch, H, mat<T>(grad_cn), dc);
  for (int64_t s = steps - 1; s >= 0; --s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    const Mat<T> c_prev = s == 0 ? mat<T>(c0) : C.at(reverse ? t + 1 : t - 1);
    if (proj) {
      // h = W_hr hr: the gradient of hr is (grad_y + dh) @ W_hr; keep grad_y + dh for grad_w_hr.
      be.add(batch, P, GY.at(t), dh, DY.at(t));
      be.gemm(batch, H, P, DY.at(t).p, DY.bs, 1, w_hr.ptr<T>(), w_hr.stride(0), w_hr.stride(1),
              T(0), dhr_m.p, dhr_m.rs);
      be.lstm_step_backward(batch, H, dhr_m, Mat<T>{}, dc, Gt.at(t), c_prev, C.at(t), dG.at(t));
    } else {
      be.lstm_step_backward(batch, H, GY.at(t), dh, dc, Gt.at(t), c_prev, C.at(t), dG.at(t));
    }
    be.gemm(batch, P, G, dG.at(t).p, dG.bs, 1, w_hh.ptr<T>(), w_hh.stride(0), w_hh.stride(1),
            T(0), dh.p, dh.rs);
  }
  input_and_weight_grads<T>(be, steps, batch, G, I, P, X, dG, Y, h0, w_ih, grad_x, grad_w_ih,
                            grad_w_hh, grad_b_ih, grad_b_hh, reverse, accumulate_grad_x);
  if (proj)
    gemm_sum_steps(be, steps, batch, P, H, DY, HR, T(0), grad_w_hr.ptr<T>(),
                   grad_w_hr.stride(0));
}

template <class T, class Be>
void rnn_forward_loop(Be& be, const TensorView& x, const TensorView& h0, const TensorView& w_ih,
                      const TensorView& w_hh, const TensorView& b_ih, const TensorView& b_hh,
                      const TensorView& y, const TensorView& hn, int kind, bool reverse) {
  const int64_t steps = x.size(0), batch = x.size(1), I = x.size(2), H = y.size(2);
  const Seq<T> X = seq<T>(x), Y = seq<T>(y);
  const T* bi = ptr_or_null<T>(b_ih);
  const T* bh = ptr_or_null<T>(b_hh);
  // The output doubles as the pre-activation buffer: each step adds its recurrent term to the
  // input projection already there and applies the nonlinearity in place.
  gemm_steps(be, steps, batch, H, I, X, w_ih.ptr<T>(), w_ih.stride(1), w_ih.stride(0), T(0), Y);
  Mat<T> h_prev = mat<T>(h0);
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    be.gemm(batch, H, H, h_prev.p, h_prev.rs, 1, w_hh.ptr<T>(), w_hh.stride(1), w_hh.stride(0),
            T(1), Y.at(t).p, Y.bs);
    be.rnn_step_forward(kind, batch, H, Y.at(t), bi, bh);
    h_prev = Y.at(t);
  }
  be.copy(batch, H, h_prev, mat<T>(hn));
}

template <class T, class Be>
void rnn_backward_loop(Be& be, const TensorView& x, const TensorView& h0, const TensorView& w_ih,
                       const TensorView& w_hh, const TensorView& y, const TensorView& grad_y,
                       const TensorView& grad_hn, const TensorView& dgates,
                       const TensorView& grad_x, const TensorView& grad_h0,
                       const TensorView& grad_w_ih, const TensorView& grad_w_hh,
                       const TensorView& grad_b_ih, const TensorView& grad_b_hh, int kind,
                       bool reverse, bool accumulate_grad_x) {
  const int64_t steps = x.size(0), batch = x.size(1), I = x.size(2), H = y.size(2);
  const Seq<T> X = seq<T>(x), Y = seq<T>(y), GY = seq<T>(grad_y), dG = seq<T>(dgates);
  const Mat<T> dh = mat<T>(grad_h0);
  be.copy(batch, H, mat<T>(grad_hn), dh);
  for (int64_t s = steps - 1; s >= 0; --s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    be.rnn_step_backward(kind, batch, H, GY.at(t), dh, Y.at(t), dG.at(t));
    be.gemm(batch, H, H, dG.at(t).p, dG.bs, 1, w_hh.ptr<T>(), w_hh.stride(0), w_hh.stride(1),
            T(0), dh.p, dh.rs);
  }
  input_and_weight_grads<T>(be, steps, batch, H, I, H, X, dG, Y, h0, w_ih, grad_x, grad_w_ih,
                            grad_w_hh, grad_b_ih, grad_b_hh, reverse, accumulate_grad_x);
}

// Argument checks shared by both backends (csrc/cpu/rnn.cpp); each throws naming the argument.
void check_lstm_forward(const TensorView& x, const TensorView& h0, const TensorView& c0,
                        const TensorView& w_ih, const TensorView& w_hh, const TensorView& b_ih,
                        const TensorView& b_hh, const TensorView& w_hr, const TensorView& y,
                        const TensorView& hn, const TensorView& cn, const TensorView& gates,
                        const TensorView& cs, const TensorView& hr);
void check_lstm_backward(const TensorView& x, const TensorView& h0, const TensorView& c0,
                         const TensorView& w_ih, const TensorView& w_hh, const TensorView& w_hr,
                         const TensorView& y, const TensorView& gates, const TensorView& cs,
                         const TensorView& hr, const TensorView& grad_y,
                         const TensorView& grad_hn, const TensorView& grad_cn,
                         const TensorView& dgates, const TensorView& dy, const TensorView& dhr,
                         const TensorView& grad_x, const TensorView& grad_h0,
                         const TensorView& grad_c0, const TensorView& grad_w_ih,
                         const TensorView& grad_w_hh, const TensorView& grad_b_ih,
                         const TensorView& grad_b_hh, const TensorView& grad_w_hr);
void check_rnn_forward(const TensorView& x, const TensorView& h0, const TensorView& w_ih,
                       const TensorView& w_hh, const TensorView& b_ih, const TensorView& b_hh,
                       const TensorView& y, const TensorView& hn, int kind);
void check_rnn_backward(const TensorView& x, const TensorView& h0, const TensorView& w_ih,
                        const TensorView& w_hh, const TensorView& y, const TensorView& grad_y,
                        const TensorView& grad_hn, const TensorView& dgates,
                        const TensorView& grad_x, const TensorView& grad_h0,
                        const TensorView& grad_w_ih, const TensorView& grad_w_hh,
                        const TensorView& grad_b_ih, const TensorView& grad_b_hh, int kind);
void check_dropout(const TensorView& input, const TensorView& mask, const TensorView& output);

}  // namespace rnn
}  // namespace pynn
