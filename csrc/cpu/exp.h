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

// double: the same scheme to degree 12 (truncation below 2e-16). 2^n comes from the bits of the
// shifted sum itself, n = bits(x log2e + 1.5 * 2^52) - bits(1.5 * 2^52), so that no packed
// double-to-int64 conversion is needed (AVX2 has none).
inline double exp_vec(double x) {
  constexpr double kLo = -708.0;  // exp(kLo) is still a normal double
  constexpr double kHi = 709.0;
  constexpr double kLog2e = 1.4426950408889634074;
  constexpr double kLn2Hi = 6.93147180369123816490e-01;  // fdlibm's split of ln 2
  constexpr double kLn2Lo = 1.90821492927058770002e-10;
  constexpr double kShifter = 6755399441055744.0;  // 1.5 * 2^52
  double xc = x >= kLo ? x : kLo;
  xc = xc <= kHi ? xc : kHi;
  const double shifted = xc * kLog2e + kShifter;
  const double n = shifted - kShifter;
  const double r = (xc - n * kLn2Hi) - n * kLn2Lo;
  double p = 1.0 / 479001600.0;  // 1/12!
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  int64_t shifted_bits, shifter_bits;
  constexpr double shifter = kShifter;
  std::memcpy(&shifted_bits, &shifted, sizeof(shifted_bits));
  std::memcpy(&shifter_bits, &shifter, sizeof(shifter_bits));
  const int64_t bits = (shifted_bits - shifter_bits + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const double y = p * scale;
  const double big = x > kHi ? std::numeric_limits<double>::infinity() : y;
  const double small = x >= kLo ? big : 0.0;
  return x != x ? x : small;
}

struct VecExp {
  template <class T>
  T operator()(T x) const { return exp_vec(x); }
};

}  // namespace cpu
}  // namespace pynn
