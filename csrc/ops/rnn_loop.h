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
//   lstm_forward_recurrence(LstmForwardSteps) / lstm_backward_recurrence(LstmBackwardSteps) /
//   rnn_forward_recurrence(RnnForwardSteps) / rnn_backward_recurrence(RnnBackwardSteps)
//       the part of a loop where each step needs the previous one. The CUDA backend runs the
//       step-by-step versions below (lstm_forward_steps, ...), built from the calls above; the
//       CPU backend runs the same arithmetic as one parallel region that keeps the recurrent
//       weights packed across steps (a single LSTM step reads them in place instead;
//       csrc/cpu/rnn.cpp), and these step-by-step versions when
//       PYNN_RNN_LOOP=steps (the tests run both).
//
// Structure (why it is fast): the input projection of every step is one GEMM before the loop
// (on the CPU, for layers whose weights fit a core's cache, part of each step instead; with a
// ring workspace, one GEMM per ring's worth of steps);
// the loop does one recurrent GEMM and one fused pointwise pass per step; the backward keeps
// only the recurrent GEMM inside the loop and forms grad_x and all weight gradients with GEMMs
// over every step at once afterwards.
#include <algorithm>
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

// A [steps, batch, width] sequence with unit column stride. A workspace that holds fewer steps
// than the loop runs (slots > 0: an inference forward, where no backward reads the gates and
// cells of every step) is a ring: step t lives in slot t % slots.
template <class T>
struct Seq {
  T* p = nullptr;
  int64_t ts = 0, bs = 0;
  int64_t slots = 0;  // 0: one slot per step
  Mat<T> at(int64_t t) const { return {p ? p + slot(t) * ts : nullptr, bs}; }
  // Steps t, t + 1, ... as a plain sequence; on a ring, as many as are left before it wraps.
  Seq from(int64_t t) const { return {p ? p + slot(t) * ts : nullptr, ts, bs}; }
  int64_t slot(int64_t t) const { return slots > 0 ? t % slots : t; }
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

// A workspace of a loop over `steps` steps: a ring when it holds fewer.
template <class T>
Seq<T> workspace(const TensorView& v, int64_t steps) {
  Seq<T> s = seq<T>(v);
  if (v.numel() > 0 && v.size(0) < steps) s.slots = v.size(0);
  return s;
}

// The loop's steps in runs whose workspace slots are contiguous, so that the input projection
// of a run is one GEMM: steps [s0, s1) cover the times [t0, t0 + s1 - s0) (in reverse order
// for the reverse direction), and t0 is a multiple of the ring's size. One run without a ring.
struct StepRun {
  int64_t s0, s1, t0;
};
inline StepRun step_run(int64_t s0, int64_t steps, int64_t slots, bool reverse) {
  if (slots <= 0) return {s0, steps, 0};
  const int64_t t = reverse ? steps - 1 - s0 : s0;
  const int64_t first = t / slots * slots, last = std::min(steps, first + slots);
  return reverse ? StepRun{s0, steps - first, first} : StepRun{s0, last, first};
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

// A weight matrix with arbitrary strides, as a GEMM operand.
template <class T>
struct Weight {
  const T* p = nullptr;
  int64_t rs = 0, cs = 0;
  Weight t() const { return {p, cs, rs}; }  // the transpose
};

template <class T>
Weight<T> weight(const TensorView& v) {
  if (v.numel() == 0) return {};
  return {v.ptr<T>(), v.stride(0), v.stride(1)};
}

// The recurrences: everything the steps of one layer and direction read and write once the
// input projections of all steps are done (forward) and before the weight gradients are formed
// over all steps (backward). Step s runs time index t = reverse ? steps - 1 - s : s.
template <class T>
struct LstmForwardSteps {
  int64_t steps, batch, I, H, P;
  Seq<T> X;             // [T, B, I] input
  Weight<T> w_ih;       // [4H, I]
  Seq<T> G;             // [T, B, 4H]: receives the activated gates
  Seq<T> C, HR, Y;      // cells, hr = o * tanh(c) (with a projection), output h
  const T* bi;          // biases, both null without
  const T* bh;
  Weight<T> w_hh;       // [4H, P]
  Weight<T> w_hr;       // [P, H], null without a projection
  Mat<T> h0, c0;
  bool reverse;
  bool saved;           // a backward reads G, C and HR (else only C's last step is read)
};

template <class T>
struct LstmBackwardSteps {
  int64_t steps, batch, H, P;
  Seq<T> G, C, GY;      // saved gates and cells, grad of the output (null: zero)
  Seq<T> dG, DY;        // out: grad of the pre-activations; with a projection grad_y + dh
  Weight<T> w_hh, w_hr;
  Mat<T> c0;
  Mat<T> dh, dc;        // hold grad_h_n / grad_c_n on entry, grad_h0 / grad_c0 on exit
  Mat<T> dhr;           // [B, H] scratch (with a projection)
  bool reverse;
};

template <class T>
struct RnnForwardSteps {
  int64_t steps, batch, I, H;
  Seq<T> X;             // [T, B, I] input
  Weight<T> w_ih;       // [H, I]
  Seq<T> Y;             // the outputs (first the input projections, then the activations)
  const T* bi;
  const T* bh;
  Weight<T> w_hh;
  Mat<T> h0;
  int kind;
  bool reverse;
};

template <class T>
struct RnnBackwardSteps {
  int64_t steps, batch, H;
  Seq<T> Y, GY, dG;
  Weight<T> w_hh;
  Mat<T> dh;            // grad_h_n on entry, grad_h0 on exit
  int kind;
  bool reverse;
};

// The input projection of a run of steps, one GEMM; W_ih^T is W_ih read with swapped strides.
template <class T, class Be>
void lstm_input_projection(Be& be, const LstmForwardSteps<T>& a, const StepRun& r) {
  const Weight<T> wih = a.w_ih.t();
  gemm_steps(be, r.s1 - r.s0, a.batch, 4 * a.H, a.I, a.X.from(r.t0), wih.p, wih.rs, wih.cs, T(0),
             a.G.from(r.t0));
}

template <class T, class Be>
void lstm_forward_steps(Be& be, const LstmForwardSteps<T>& a) {
  const bool proj = a.w_hr.p != nullptr;
  Mat<T> h_prev = a.h0, c_prev = a.c0;
  StepRun run{0, 0, 0};
  for (int64_t s = 0; s < a.steps; ++s) {
    const int64_t t = a.reverse ? a.steps - 1 - s : s;
    // Input projections a run at a time: all steps at once, or a ring's worth.
    if (s == run.s1) {
      run = step_run(s, a.steps, a.G.slots, a.reverse);
      lstm_input_projection(be, a, run);
    }
    const Weight<T> whh = a.w_hh.t();
    be.gemm(a.batch, 4 * a.H, a.P, h_prev.p, h_prev.rs, 1, whh.p, whh.rs, whh.cs, T(1),
            a.G.at(t).p, a.G.bs);
    be.lstm_step_forward(a.batch, a.H, a.G.at(t), a.bi, a.bh, c_prev, a.C.at(t),
                         proj ? a.HR.at(t) : a.Y.at(t));
    if (proj) {
      const Weight<T> whr = a.w_hr.t();
      be.gemm(a.batch, a.P, a.H, a.HR.at(t).p, a.HR.bs, 1, whr.p, whr.rs, whr.cs, T(0),
              a.Y.at(t).p, a.Y.bs);
    }
    h_prev = a.Y.at(t);
    c_prev = a.C.at(t);
  }
}

template <class T, class Be>
void lstm_backward_steps(Be& be, const LstmBackwardSteps<T>& a) {
  const bool proj = a.w_hr.p != nullptr;
  for (int64_t s = a.steps - 1; s >= 0; --s) {
    const int64_t t = a.reverse ? a.steps - 1 - s : s;
    const Mat<T> c_prev = s == 0 ? a.c0 : a.C.at(a.reverse ? t + 1 : t - 1);
    if (proj) {
      // h = W_hr hr: the gradient of hr is (grad_y + dh) @ W_hr; keep grad_y + dh for grad_w_hr.
      be.add(a.batch, a.P, a.GY.at(t), a.dh, a.DY.at(t));
      be.gemm(a.batch, a.H, a.P, a.DY.at(t).p, a.DY.bs, 1, a.w_hr.p, a.w_hr.rs, a.w_hr.cs, T(0),
              a.dhr.p, a.dhr.rs);
      be.lstm_step_backward(a.batch, a.H, a.dhr, Mat<T>{}, a.dc, a.G.at(t), c_prev, a.C.at(t),
                            a.dG.at(t));
    } else {
      be.lstm_step_backward(a.batch, a.H, a.GY.at(t), a.dh, a.dc, a.G.at(t), c_prev, a.C.at(t),
                            a.dG.at(t));
    }
    be.gemm(a.batch, a.P, 4 * a.H, a.dG.at(t).p, a.dG.bs, 1, a.w_hh.p, a.w_hh.rs, a.w_hh.cs,
            T(0), a.dh.p, a.dh.rs);
  }
}

template <class T, class Be>
void rnn_forward_steps(Be& be, const RnnForwardSteps<T>& a) {
  // The output doubles as the pre-activation buffer: each step adds its recurrent term to the
  // input projection already there and applies the nonlinearity in place.
  const Weight<T> wih = a.w_ih.t();
  gemm_steps(be, a.steps, a.batch, a.H, a.I, a.X, wih.p, wih.rs, wih.cs, T(0), a.Y);
  Mat<T> h_prev = a.h0;
  const Weight<T> whh = a.w_hh.t();
  for (int64_t s = 0; s < a.steps; ++s) {
    const int64_t t = a.reverse ? a.steps - 1 - s : s;
    be.gemm(a.batch, a.H, a.H, h_prev.p, h_prev.rs, 1, whh.p, whh.rs, whh.cs, T(1), a.Y.at(t).p,
            a.Y.bs);
    be.rnn_step_forward(a.kind, a.batch, a.H, a.Y.at(t), a.bi, a.bh);
    h_prev = a.Y.at(t);
  }
}

template <class T, class Be>
void rnn_backward_steps(Be& be, const RnnBackwardSteps<T>& a) {
  for (int64_t s = a.steps - 1; s >= 0; --s) {
    const int64_t t = a.reverse ? a.steps - 1 - s : s;
    be.rnn_step_backward(a.kind, a.batch, a.H, a.GY.at(t), a.dh, a.Y.at(t), a.dG.at(t));
    be.gemm(a.batch, a.H, a.H, a.dG.at(t).p, a.dG.bs, 1, a.w_hh.p, a.w_hh.rs, a.w_hh.cs, T(0),
            a.dh.p, a.dh.rs);
  }
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
                       const TensorView& cs, const TensorView& hr, bool reverse, bool saved) {
  const int64_t steps = x.size(0), batch = x.size(1), I = x.size(2);
  const int64_t H = cs.size(2), P = y.size(2);
  const bool proj = w_hr.numel() > 0;
  const Seq<T> X = seq<T>(x), Y = seq<T>(y);
  const Seq<T> Gt = workspace<T>(gates, steps), C = workspace<T>(cs, steps);
  const Seq<T> HR = workspace<T>(hr, steps);
  const T* bi = ptr_or_null<T>(b_ih);
  const T* bh = ptr_or_null<T>(b_hh);
  be.lstm_forward_recurrence(LstmForwardSteps<T>{
      steps, batch, I, H, P, X, weight<T>(w_ih), Gt, C, HR, Y, bi, bh, weight<T>(w_hh), proj ? weight<T>(w_hr) : Weight<T>{},
      mat<T>(h0), mat<T>(c0), reverse, saved});
  const int64_t last = reverse ? 0 : steps - 1;
  const Mat<T> h_prev = Y.at(last), c_prev = C.at(last);
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
  be.lstm_backward_recurrence(LstmBackwardSteps<T>{
      steps, batch, H, P, Gt, C, GY, dG, DY, weight<T>(w_hh),
      proj ? weight<T>(w_hr) : Weight<T>{}, mat<T>(c0), dh, dc, dhr_m, reverse});
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
  be.rnn_forward_recurrence(RnnForwardSteps<T>{steps, batch, I, H, X, weight<T>(w_ih), Y, bi, bh, weight<T>(w_hh),
                                               mat<T>(h0), kind, reverse});
  const Mat<T> h_prev = Y.at(reverse ? 0 : steps - 1);
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
  be.rnn_backward_recurrence(RnnBackwardSteps<T>{steps, batch, H, Y, GY, dG, weight<T>(w_hh),
                                                 dh, kind, reverse});
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
