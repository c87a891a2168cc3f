#pragma once
// exp for the CPU softmax-shaped loops, written so that the compiler can vectorise a loop that
// calls it: no libm call and only selects. libm's expf is a scalar call per element and made the
// softmax rows several times slower than torch's vectorised exp. GCC if-converts the selects
// only without -ftrapping-math, so CMakeLists.txt compiles the files that use this with
// -fno-trapping-math (we never read the floating-point exception flags).
//
// float: round x / ln2 to n with the 1.5 * 2^23 shifter, reduce r = x - n ln2 (ln2 split in two
// parts so n ln2 is exact), exp(r) by its Taylor series to degree 7 (|r| <= ln2 / 2, truncation
// error below 6e-9, under float's half ulp), and scale by 2^n built in the exponent bits.
// double keeps std::exp: the float64 parity tolerance (1e-10) is tighter than a cheap polynomial.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace pynn {
namespace cpu {

inline float exp_vec(float x) {
  constexpr float kLo = -87.3f;  // below: 0 (would be subnormal, which torch returns as ~0 too)
  constexpr float kHi = 88.0f;   // above: inf
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;  // exact in 16 bits, so n * kLn2Hi is exact
  constexpr float kLn2Lo = 1.42860682030941723e-6f;
  constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float xc = x >= kLo ? x : kLo;  // NaN lands here too and is restored below
  xc = xc <= kHi ? xc : kHi;
  const float n = (xc * kLog2e + kShifter) - kShifter;
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const float y = p * scale;
  const float big = x > kHi ? std::numeric_limits<float>::infinity() : y;
  const float small = x >= kLo ? big : 0.0f;  // -inf included
  return x != x ? x : small;
}

inline double exp_vec(double x) { return std::exp(x); }

struct VecExp {
  template <class T>
  T operator()(T x) const { return exp_vec(x); }
};

}  // namespace cpu
}  // namespace pynn
