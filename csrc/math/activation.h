#pragma once
// Pointwise activations and their derivatives, shared by the CPU loops, the CUDA kernels and
// the fused RNN/LSTM cells.
#include <cmath>

#include "core/error.h"
#include "core/macros.h"
#include "math/simd_math.h"

namespace pynn {

enum class ActKind : int { Sigmoid = 0, Tanh = 1, ReLU = 2, LeakyReLU = 3 };

// Never overflows (exp of a non-positive number only) and has no libm call, so the CPU loops
// vectorise; about 2 ulp (math/simd_math.h).
template <class T>
PYNN_HOST_DEVICE T sigmoid(T x) {
  return simd_math::sigmoid(x);
}

template <ActKind K, class T>
PYNN_HOST_DEVICE T activation_forward(T x, T slope) {
  if constexpr (K == ActKind::Sigmoid) return sigmoid(x);
  else if constexpr (K == ActKind::Tanh) return simd_math::tanh(x);
  // x < 0 is false for NaN, so NaN passes through as it does in torch.
  else if constexpr (K == ActKind::ReLU) return x < T(0) ? T(0) : x;
  else return x < T(0) ? x * slope : x;
}

// `saved` is the forward output for every kind except LeakyReLU with a negative slope, where
// it is the input (the output's sign no longer tells the branch); the ReLU-like test
// `saved > 0` then reads the same either way.
template <ActKind K, class T>
PYNN_HOST_DEVICE T activation_backward(T grad, T saved, T slope) {
  if constexpr (K == ActKind::Sigmoid) return grad * saved * (T(1) - saved);
  else if constexpr (K == ActKind::Tanh) return grad * (T(1) - saved * saved);
  else if constexpr (K == ActKind::ReLU) return saved <= T(0) ? T(0) : grad;
  else return saved > T(0) ? grad : grad * slope;
}

template <ActKind K>
struct ActTag { static constexpr ActKind kind = K; };

// Host-side: turns the runtime kind into a compile-time tag, f(ActTag<K>{}).
template <class F>
void dispatch_activation(int kind, const char* op, F&& f) {
  switch (static_cast<ActKind>(kind)) {
    case ActKind::Sigmoid: f(ActTag<ActKind::Sigmoid>{}); return;
    case ActKind::Tanh: f(ActTag<ActKind::Tanh>{}); return;
    case ActKind::ReLU: f(ActTag<ActKind::ReLU>{}); return;
    case ActKind::LeakyReLU: f(ActTag<ActKind::LeakyReLU>{}); return;
  }
  throw ValueError(detail::concat(op, ": unknown activation kind ", kind));
}

}  // namespace pynn
