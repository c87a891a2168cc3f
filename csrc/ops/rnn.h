#pragma once
// Elman RNN (tanh / relu) and LSTM layers: one call runs one layer in one direction over the whole
// sequence, forward or backward, so Python never loops over time steps. A cell (RNNCell, LSTMCell)
// is the same call with one step.
//
// Layout: sequences are [T, B, width] with unit column stride and any time/batch strides (the
// output of one direction may be a slice of the bidirectional output). Weights are torch's:
// w_ih [G*H, I], w_hh [G*H, P], b_ih / b_hh [G*H] (G = 4 for LSTM, 1 for RNN), w_hr [P, H]
// (LSTM projection; P = H without one). An absent optional tensor (bias, projection, a gradient
// that is zero, grad_x that is not wanted) is passed as a tensor with no elements.
//
// Workspaces, allocated by the caller and kept from the forward for the backward:
//   gates [T, B, 4H]  activated gates i, f, g, o of every step
//   cs    [T, B, H]   cell state of every step
//   hr    [T, B, H]   o * tanh(c) before the projection (only with a projection)
// A forward that no backward will follow may pass all three with S steps instead of T, 2 <= S
// < T: a ring in which step t lives in slot t % S, so an inference pass over a long sequence
// needs S steps of workspace rather than T. `saved` says whether a backward will read gates, cs
// and hr: when it is false the CPU loop may keep a thread's gates and cells in buffers of its
// own, and then leaves gates and all steps of cs but the last unspecified.
// and for the backward only: dgates [T, B, G*H] (gradient of the pre-activations), with a
// projection dy [T, B, P] and dhr [B, H].
// kind (RNN): the nonlinearity code of csrc/math/activation.h, Tanh = 1, ReLU = 2.
#include <cstdint>

#include "core/tensor.h"

namespace pynn {

void lstm_forward_cpu(const TensorView& x, const TensorView& h0, const TensorView& c0,
                      const TensorView& w_ih, const TensorView& w_hh, const TensorView& b_ih,
                      const TensorView& b_hh, const TensorView& w_hr, const TensorView& y,
                      const TensorView& hn, const TensorView& cn, const TensorView& gates,
                      const TensorView& cs, const TensorView& hr, bool reverse, bool saved);
void lstm_backward_cpu(const TensorView& x, const TensorView& h0, const TensorView& c0,
                       const TensorView& w_ih, const TensorView& w_hh, const TensorView& w_hr,
                       const TensorView& y, const TensorView& gates, const TensorView& cs,
                       const TensorView& hr, const TensorView& grad_y, const TensorView& grad_hn,
                       const TensorView& grad_cn, const TensorView& dgates, const TensorView& dy,
                       const TensorView& dhr, const TensorView& grad_x, const TensorView& grad_h0,
                       const TensorView& grad_c0, const TensorView& grad_w_ih,
                       const TensorView& grad_w_hh, const TensorView& grad_b_ih,
                       const TensorView& grad_b_hh, const TensorView& grad_w_hr, bool reverse,
                       bool accumulate_grad_x);

void rnn_forward_cpu(const TensorView& x, const TensorView& h0, const TensorView& w_ih,
                     const TensorView& w_hh, const TensorView& b_ih, const TensorView& b_hh,
                     const TensorView& y, const TensorView& hn, int kind, bool reverse);
void rnn_backward_cpu(const TensorView& x, const TensorView& h0, const TensorView& w_ih,
                      const TensorView& w_hh, const TensorView& y, const TensorView& grad_y,
                      const TensorView& grad_hn, const TensorView& dgates,
                      const TensorView& grad_x, const TensorView& grad_h0,
                      const TensorView& grad_w_ih, const TensorView& grad_w_hh,
                      const TensorView& grad_b_ih, const TensorView& grad_b_hh, int kind,
                      bool reverse, bool accumulate_grad_x);

// Inter-layer dropout: output = input * mask * scale (mask of zeros and ones, same dtype). The
// backward is the same call on the gradient.
void rnn_dropout_cpu(const TensorView& input, const TensorView& mask, const TensorView& output,
                     double scale);

#ifdef PYNN_WITH_CUDA
void lstm_forward_cuda(const TensorView& x, const TensorView& h0, const TensorView& c0,
                       const TensorView& w_ih, const TensorView& w_hh, const TensorView& b_ih,
                       const TensorView& b_hh, const TensorView& w_hr, const TensorView& y,
                       const TensorView& hn, const TensorView& cn, const TensorView& gates,
                       const TensorView& cs, const TensorView& hr, bool reverse, bool saved,
                       uintptr_t stream);
void lstm_backward_cuda(const TensorView& x, const TensorView& h0, const TensorView& c0,
                        const TensorView& w_ih, const TensorView& w_hh, const TensorView& w_hr,
                        const TensorView& y, const TensorView& gates, const TensorView& cs,
                        const TensorView& hr, const TensorView& grad_y, const TensorView& grad_hn,
                        const TensorView& grad_cn, const TensorView& dgates, const TensorView& dy,
                        const TensorView& dhr, const TensorView& grad_x, const TensorView& grad_h0,
                        const TensorView& grad_c0, const TensorView& grad_w_ih,
                        const TensorView& grad_w_hh, const TensorView& grad_b_ih,
                        const TensorView& grad_b_hh, const TensorView& grad_w_hr, bool reverse,
                        bool accumulate_grad_x, uintptr_t stream);
void rnn_forward_cuda(const TensorView& x, const TensorView& h0, const TensorView& w_ih,
                      const TensorView& w_hh, const TensorView& b_ih, const TensorView& b_hh,
                      const TensorView& y, const TensorView& hn, int kind, bool reverse,
                      uintptr_t stream);
void rnn_backward_cuda(const TensorView& x, const TensorView& h0, const TensorView& w_ih,
                       const TensorView& w_hh, const TensorView& y, const TensorView& grad_y,
                       const TensorView& grad_hn, const TensorView& dgates,
                       const TensorView& grad_x, const TensorView& grad_h0,
                       const TensorView& grad_w_ih, const TensorView& grad_w_hh,
                       const TensorView& grad_b_ih, const TensorView& grad_b_hh, int kind,
                       bool reverse, bool accumulate_grad_x, uintptr_t stream);
void rnn_dropout_cuda(const TensorView& input, const TensorView& mask, const TensorView& output,
                      double scale, uintptr_t stream);
#endif

}  // namespace pynn
