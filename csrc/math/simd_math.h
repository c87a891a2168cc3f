#pragma once
// Branch-free exp, sigmoid and tanh shared by the activations and the recurrent cells, on the CPU
// and the GPU alike.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "core/macros.h"

namespace pynn {

// ---- branch-free exp, sigmoid and tanh ---------------------------------------------------------
// The gate nonlinearities are most of an LSTM step's pointwise work. libm's expf / tanhf are
// opaque calls the compiler cannot vectorise (~30 ns each here), so these are written without
// calls or branches: the CPU loops become SIMD code, and the GPU runs the very same arithmetic.
// Accuracy: about 2 ulp in float and double (range reduction x = n ln2 + r, |r| <= ln2 / 2,
// then a Taylor polynomial of expm1(r) long enough for the type).
namespace simd_math {

template <class T>
struct ExpConst;
template <>
struct ExpConst<float> {
  using Bits = int32_t;
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693359375f;  // few mantissa bits: n * ln2_hi is exact
  static constexpr float ln2_lo = -2.12194440e-4f;
  static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to integer
  static constexpr float min_arg = -87.0f;  // 2^n stays a normal number
  static constexpr float max_arg = 88.0f;   // 2^n stays finite
  // Degree 7: its truncation, |r|^8 / 8! <= 5.3e-9, is 0.09 ulp; degree 8 cost another FMA per
  // exp for no visible gain (max error over [-20, 20]: sigmoid 1.67 ulp either way, tanh 1.43 ->
  // 1.68 ulp; softmax rows 3% faster).
  static constexpr int mantissa = 23, exp_bias = 127, degree = 7;
};
template <>
struct ExpConst<double> {
  using Bits = int64_t;
  static constexpr double log2e = 1.4426950408889634;
  static constexpr double ln2_hi = 6.93147180369123816490e-01;
  static constexpr double ln2_lo = 1.90821492927058770002e-10;
  static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double min_arg = -708.0;
  static constexpr double max_arg = 709.0;
  static constexpr int mantissa = 52, exp_bias = 1023, degree = 14;
};

template <class T>
PYNN_HOST_DEVICE T bits_to(typename ExpConst<T>::Bits b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

template <class T>
PYNN_HOST_DEVICE typename ExpConst<T>::Bits to_bits(T v) {
  typename ExpConst<T>::Bits b;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}

constexpr double inv_factorial(int k) { return k <= 1 ? 1.0 : inv_factorial(k - 1) / k; }

// sum_{k=K..N} r^(k-K) / k!
template <int K, int N, class T>
PYNN_HOST_DEVICE T horner_inv_factorial(T r) {
  if constexpr (K == N) return T(inv_factorial(N));
  else return horner_inv_factorial<K + 1, N>(r) * r + T(inv_factorial(K));
}

// For min_arg <= x <= max_arg: x = n ln2 + r, scale = 2^n, poly = expm1(r). Then
// exp(x) = scale * poly + scale and expm1(x) = scale * poly + (scale - 1), both free of
// cancellation (n = 0 gives expm1 = poly exactly).
template <class T>
PYNN_HOST_DEVICE void exp_split(T x, T& scale, T& poly) {
  using K = ExpConst<T>;
  const T shifted = x * K::log2e + K::round_magic;
  const T n = shifted - K::round_magic;
  const T r = (x - n * K::ln2_hi) - n * K::ln2_lo;
  // The integer n sits in the low mantissa bits of `shifted`: no float-to-int conversion.
  const typename K::Bits ni = to_bits(shifted) - to_bits(K::round_magic);
  scale = bits_to<T>((ni + K::exp_bias) << K::mantissa);
  // expm1(r) = r * sum_{k>=1} r^(k-1) / k!, as straight-line Horner code (no loop or table:
  // either can keep the compiler from vectorising the caller).
  const T acc = horner_inv_factorial<1, K::degree>(r);
  poly = acc * r;
}

// exp of x <= max_arg (or NaN): 0 below min_arg (the result would be subnormal), NaN kept. A
// larger x would overflow 2^n. Its callers, the softmax-shaped CPU loops (cpu/exp.h), pass x - max
// over a row or a log-probability, never positive, so it has no test against max_arg (a general
// exp's clamp and inf select were 4 of about 28 vector operations per element).
template <class T>
PYNN_HOST_DEVICE T exp_below_max(T x) {
  using K = ExpConst<T>;
  const T xc = x >= K::min_arg ? x : K::min_arg;  // NaN fails the test: restored below
  T scale, poly;
  exp_split(xc, scale, poly);
  const T y = scale * poly + scale;
  const T small = x >= K::min_arg ? y : T(0);
  return x != x ? x : small;
}

// NaN propagates as NaN; +-inf saturate to 1 / 0.
template <class T>
PYNN_HOST_DEVICE T sigmoid(T x) {
  T a = -std::fabs(x);
  a = a > ExpConst<T>::min_arg ? a : ExpConst<T>::min_arg;  // NaN fails the test: fixed below
  T scale, poly;
  exp_split(a, scale, poly);
  const T e = scale * poly + scale;  // exp(-|x|)
  const T d = T(1) / (T(1) + e);
  const T y = x >= T(0) ? d : e * d;
  return x != x ? x : y;
}

// tanh|x| = -expm1(-2|x|) / (2 + expm1(-2|x|)): accurate near 0 as well as in the tails.
template <class T>
PYNN_HOST_DEVICE T tanh(T x) {
  T a = T(-2) * std::fabs(x);
  a = a > ExpConst<T>::min_arg ? a : ExpConst<T>::min_arg;
  T scale, poly;
  exp_split(a, scale, poly);
  const T em = scale * poly + (scale - T(1));
  const T y = std::copysign(-em / (T(2) + em), x);
  return x != x ? x : y;
}

}  // namespace simd_math

}  // namespace pynn
