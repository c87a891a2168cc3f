#pragma once
// Local response normalisation across channels, torch's definition. For one pixel with channel
// values a_0..a_{C-1}, before = size/2 and after = (size-1)/2:
//   scale_c = k + alpha/size * sum_{j=c-before}^{c+after} a_j^2     (j outside [0, C) adds 0)
//   out_c   = a_c * scale_c^-beta
// and, with t_c = g_c * a_c * scale_c^(-beta-1),
//   grad_a_j = g_j * scale_j^-beta - 2*alpha*beta/size * a_j * sum_{c=j-after}^{j+before} t_c
// (channel j lies in the window of c exactly when c lies in the mirrored window of j).
// Both sums slide along the channels: one add and one subtract per channel, so the cost per
// pixel is O(C) whatever the size. The helpers here keep that running sum exact enough and
// make a NaN or inf affect only the windows that contain it, as a fresh sum per window would.
#include <cmath>

#include "core/error.h"
#include "core/macros.h"

namespace pynn {

// Common betas get s^-beta from square roots (several times cheaper than pow, a few ulp apart).
enum class LrnPow : int { General = 0, Half = 1, ThreeQuarters = 2, One = 3 };

template <LrnPow K, class T>
PYNN_HOST_DEVICE T lrn_pow_neg(T s, T beta) {
  if constexpr (K == LrnPow::Half) return T(1) / std::sqrt(s);
  else if constexpr (K == LrnPow::ThreeQuarters) {
    const T r = std::sqrt(s);
    return T(1) / (r * std::sqrt(r));
  } else if constexpr (K == LrnPow::One) return T(1) / s;
  else return std::pow(s, -beta);
}

inline LrnPow lrn_pow_kind(double beta) {
  if (beta == 0.5) return LrnPow::Half;
  if (beta == 0.75) return LrnPow::ThreeQuarters;
  if (beta == 1.0) return LrnPow::One;
  return LrnPow::General;
}

template <LrnPow K>
struct LrnPowTag { static constexpr LrnPow kind = K; };

template <class F>
void dispatch_lrn_pow(double beta, F&& f) {
  switch (lrn_pow_kind(beta)) {
    case LrnPow::Half: f(LrnPowTag<LrnPow::Half>{}); return;
    case LrnPow::ThreeQuarters: f(LrnPowTag<LrnPow::ThreeQuarters>{}); return;
    case LrnPow::One: f(LrnPowTag<LrnPow::One>{}); return;
    default: f(LrnPowTag<LrnPow::General>{}); return;
  }
}

// Running window sum in double. The finite part is a plain double sum (float inputs: squares
// and products of floats are far inside double's range and precision) or, for float64 inputs,
// a compensated one (TwoSum), so a large value leaving the window does not wipe out the small
// ones beside it. Non-finite values are counted, not summed: subtracting an inf that leaves
// the window must not leave NaN behind.
// lrn_window_slide adds v_in and removes v_out (0 removes nothing). kSigned: values may be
// negative (gradient terms); squares need no -inf count. The body is plain selects into
// temporaries (no &&, no bool-to-double casts, no select feeding a select's accumulator twice):
// that is the form GCC vectorises in the CPU pixel loops.
template <bool kCompensated>
PYNN_HOST_DEVICE void lrn_two_sum(double& sum, double& comp, double f) {
  if constexpr (kCompensated) {
    const double t = sum + f;
    const double bp = t - sum;
    comp += (sum - (t - bp)) + (f - bp);
    sum = t;
  } else {
    sum += f;
  }
}

template <bool kCompensated, bool kSigned>
PYNN_HOST_DEVICE void lrn_window_slide(double& sum, double& comp, double& n_nan, double& n_pinf,
                                       double& n_ninf, double v_in, double v_out) {
  const double f_in = std::isfinite(v_in) ? v_in : 0.0;
  const double f_out = std::isfinite(v_out) ? v_out : 0.0;
  const double nan_in = v_in != v_in ? 1.0 : 0.0;
  const double nan_out = v_out != v_out ? 1.0 : 0.0;
  const double pinf_in = v_in == INFINITY ? 1.0 : 0.0;
  const double pinf_out = v_out == INFINITY ? 1.0 : 0.0;
  n_nan = n_nan + nan_in - nan_out;
  n_pinf = n_pinf + pinf_in - pinf_out;
  if constexpr (kSigned) {
    const double ninf_in = v_in == -INFINITY ? 1.0 : 0.0;
    const double ninf_out = v_out == -INFINITY ? 1.0 : 0.0;
    n_ninf = n_ninf + ninf_in - ninf_out;
  }
  lrn_two_sum<kCompensated>(sum, comp, f_in);
  lrn_two_sum<kCompensated>(sum, comp, -f_out);
}

PYNN_HOST_DEVICE double lrn_window_value(double sum, double comp, double n_nan, double n_pinf,
                                         double n_ninf) {
  const double r = sum + comp;
  const double inf = n_pinf > 0.0 ? INFINITY : -INFINITY;
  const double both = n_pinf > 0.0 ? n_ninf : 0.0;  // > 0 when +inf and -inf are both in
  const double r1 = n_pinf + n_ninf > 0.0 ? inf : r;
  const double r2 = both > 0.0 ? NAN : r1;
  return n_nan > 0.0 ? NAN : r2;
}

// One pixel's window state, for the kernels that slide per pixel (CUDA, channels-last CPU).
template <bool kCompensated, bool kSigned>
struct LrnWindow {
  double sum = 0.0, comp = 0.0, n_nan = 0.0, n_pinf = 0.0, n_ninf = 0.0;
  PYNN_HOST_DEVICE void slide(double v_in, double v_out) {
    lrn_window_slide<kCompensated, kSigned>(sum, comp, n_nan, n_pinf, n_ninf, v_in, v_out);
  }
  PYNN_HOST_DEVICE double value() const {
    return lrn_window_value(sum, comp, n_nan, n_pinf, n_ninf);
  }
};

// scale in T from the window's sum of squares; coef = alpha / size.
template <class T>
PYNN_HOST_DEVICE T lrn_scale(double window_sq_sum, double coef, double k) {
  return static_cast<T>(k + coef * window_sq_sum);
}

// p = s^-beta and p / s = s^(-beta-1) together, with one division.
template <LrnPow K, class T>
PYNN_HOST_DEVICE void lrn_pow_pair(T s, T beta, T& p, T& p_over_s) {
  if constexpr (K == LrnPow::ThreeQuarters) {
    const T inv = T(1) / s;
    p = std::sqrt(std::sqrt(s)) * inv;  // s^(1/4) / s
    p_over_s = p * inv;
  } else if constexpr (K == LrnPow::Half) {
    const T inv = T(1) / s;
    p = std::sqrt(inv);
    p_over_s = p * inv;
  } else if constexpr (K == LrnPow::One) {
    p = T(1) / s;
    p_over_s = p * p;
  } else {
    p = std::pow(s, -beta);
    p_over_s = p / s;
  }
}

// t_c of the gradient: the term channel c contributes to its mirrored window.
template <LrnPow K, class T>
PYNN_HOST_DEVICE double lrn_grad_term(T g, T a, T scale, T beta) {
  T p, p_over_s;
  lrn_pow_pair<K>(scale, beta, p, p_over_s);
  return static_cast<double>(g * a * p_over_s);
}

// grad_a_j from its own factor p_j = scale_j^-beta and the window sum of t, in T (the window
// sum is the only part that needs double); coef2 = 2 * alpha * beta / size.
template <class T>
PYNN_HOST_DEVICE T lrn_grad_input(T g, T a, T p, double t_window, double coef2) {
  return g * p - static_cast<T>(coef2) * a * static_cast<T>(t_window);
}

}  // namespace pynn
