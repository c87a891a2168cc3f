#pragma once
// Per-element math of the recurrent cells, shared by the CPU step loops and the CUDA step kernels.
// The matrix products around it (input and recurrent projections) are GEMMs; everything between
// two GEMMs of one time step is one call of these functions per (batch row, hidden unit).
//
// LSTM gate order is torch's: the 4H pre-activations of a row are [i | f | g | o], blocks of H.
#include <cstdint>

#include "math/activation.h"
#include "math/simd_math.h"

namespace pynn {


// Pre-activations in, activated gates out (in place), then the new cell and hidden values:
//   c = f * c_prev + i * g,   h = o * tanh(c).
template <class T>
PYNN_HOST_DEVICE void lstm_pointwise_forward(T& i, T& f, T& g, T& o, T c_prev, T& c, T& h) {
  i = simd_math::sigmoid(i);
  f = simd_math::sigmoid(f);
  g = simd_math::tanh(g);
  o = simd_math::sigmoid(o);
  c = f * c_prev + i * g;
  h = o * simd_math::tanh(c);
}

// Gradients of one unit of one step. dh reaches h = o * tanh(c) (the output gradient plus the
// recurrent one); dc is the cell gradient carried back from step t + 1. i, f, g, o are the
// activated gates saved by the forward, c its cell value. Writes the gradients of the four
// pre-activations and returns the cell gradient for step t - 1. tanh(c) is recomputed rather
// than stored: one transcendental per unit is cheaper than a [T, B, H] buffer round trip.
template <class T>
PYNN_HOST_DEVICE T lstm_pointwise_backward(T dh, T dc, T i, T f, T g, T o, T c_prev, T c, T& di,
                                           T& df, T& dg, T& d_o) {
  const T tc = simd_math::tanh(c);
  const T dc_total = dc + activation_backward<ActKind::Tanh>(dh * o, tc, T(0));
  d_o = activation_backward<ActKind::Sigmoid>(dh * tc, o, T(0));
  di = activation_backward<ActKind::Sigmoid>(dc_total * g, i, T(0));
  df = activation_backward<ActKind::Sigmoid>(dc_total * c_prev, f, T(0));
  dg = activation_backward<ActKind::Tanh>(dc_total * i, g, T(0));
  return dc_total * f;
}

// Elman RNN: h = act(pre); the backward reads the saved output h (tanh' and relu' need only it).
template <ActKind K, class T>
PYNN_HOST_DEVICE T rnn_pointwise_forward(T pre) {
  if constexpr (K == ActKind::Tanh) return simd_math::tanh(pre);
  else return activation_forward<K>(pre, T(0));
}

template <ActKind K, class T>
PYNN_HOST_DEVICE T rnn_pointwise_backward(T dh, T h) {
  return activation_backward<K>(dh, h, T(0));
}

// The two nonlinearities torch's RNN accepts, as a compile-time tag (kind: ActKind::Tanh or
// ActKind::ReLU, the codes csrc/math/activation.h defines).
template <class F>
void dispatch_rnn_nonlinearity(int kind, const char* op, F&& f) {
  switch (static_cast<ActKind>(kind)) {
    case ActKind::Tanh: f(ActTag<ActKind::Tanh>{}); return;
    case ActKind::ReLU: f(ActTag<ActKind::ReLU>{}); return;
    default: break;
  }
  throw ValueError(detail::concat(op, ": nonlinearity code ", kind,
                                  " is neither tanh (1) nor relu (2)"));
}

}  // namespace pynn
