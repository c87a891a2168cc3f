#pragma once
// Batch normalisation per channel c over the M = N * P values of that channel:
//   y = (x - mean) * invstd * w + b,   invstd = 1 / sqrt(var + eps)
// Training uses the batch's mean and biased variance (the running variance gets the unbiased
// one); eval uses the running statistics. Gradients, with xmu = x - mean:
//   grad_b = sum dy,  grad_w = invstd * sum dy*xmu
//   grad_x = w*invstd * (dy - sum dy / M - xmu * invstd^2 * sum dy*xmu / M)   (training)
//   grad_x = w*invstd * dy                                                    (eval)
// Statistics are merged from per-tile (count, mean, M2) triples (Chan et al.), each tile's
// computed in double, so a large mean never cancels against a small variance.
#include <cmath>

#include "core/macros.h"

namespace pynn {

// Count, mean and sum of squared deviations. Trivial (value-initialise with {}), so CUDA
// kernels can keep arrays of it in shared memory.
struct BnMoments {
  double n, mean, m2;
};

// Welford: one more value.
PYNN_HOST_DEVICE void bn_welford_push(BnMoments& a, double x) {
  a.n += 1.0;
  const double d = x - a.mean;
  a.mean += d / a.n;
  a.m2 += d * (x - a.mean);
}

// Chan et al.: the moments of the union of two disjoint sets.
PYNN_HOST_DEVICE BnMoments bn_merge(const BnMoments& a, const BnMoments& b) {
  if (b.n == 0.0) return a;
  if (a.n == 0.0) return b;
  BnMoments r{};
  r.n = a.n + b.n;
  const double d = b.mean - a.mean;
  const double fb = b.n / r.n;
  r.mean = a.mean + d * fb;
  r.m2 = a.m2 + b.m2 + d * d * a.n * fb;
  return r;
}

// Channel statistics used by the forward and saved for the backward (double on every device).
struct BnStats {
  double mean, invstd;
};

PYNN_HOST_DEVICE BnStats bn_train_stats(const BnMoments& m, double eps) {
  // An empty batch normalises nothing; 0 keeps its (empty) gradients finite.
  if (m.n == 0.0) return {0.0, 0.0};
  return {m.mean, 1.0 / sqrt(m.m2 / m.n + eps)};
}

PYNN_HOST_DEVICE BnStats bn_eval_stats(double running_mean, double running_var, double eps) {
  return {running_mean, 1.0 / sqrt(running_var + eps)};
}

// running = (1 - momentum) * running + momentum * batch, with the unbiased batch variance.
template <class T>
PYNN_HOST_DEVICE void bn_update_running(T* running_mean, T* running_var, const BnMoments& m,
                                        double momentum) {
  if (m.n == 0.0) return;  // torch leaves the running statistics alone for an empty batch
  const double var = m.m2 / (m.n - 1.0);
  if (running_mean)
    *running_mean = static_cast<T>((1.0 - momentum) * *running_mean + momentum * m.mean);
  if (running_var)
    *running_var = static_cast<T>((1.0 - momentum) * *running_var + momentum * var);
}

// The mean as hi + lo in T: x - hi is exact for x near the mean (Sterbenz), so (x - hi) - lo
// keeps a float32 input's deviation accurate even when the mean is 1e4 times the spread.
template <class T>
struct BnCenter {
  T hi, lo;
};

template <class T>
PYNN_HOST_DEVICE BnCenter<T> bn_center(double mean) {
  const T hi = static_cast<T>(mean);
  return {hi, static_cast<T>(mean - static_cast<double>(hi))};
}

template <class T>
PYNN_HOST_DEVICE T bn_centered(T x, const BnCenter<T>& m) {
  return (x - m.hi) - m.lo;
}

template <class T>
struct BnForwardCoeffs {
  BnCenter<T> center;
  T scale, shift;
};

// w and b point at the channel's weight and bias, or are null (1 and 0).
template <class T>
PYNN_HOST_DEVICE BnForwardCoeffs<T> bn_forward_coeffs(const BnStats& s, const T* w, const T* b) {
  const double wd = w ? static_cast<double>(*w) : 1.0;
  return {bn_center<T>(s.mean), static_cast<T>(wd * s.invstd), b ? *b : T(0)};
}

template <class T>
PYNN_HOST_DEVICE T bn_forward(T x, const BnForwardCoeffs<T>& k) {
  return bn_centered(x, k.center) * k.scale + k.shift;
}

// grad_x = k_dy * dy + k_xmu * xmu + k_0.
template <class T>
struct BnBackwardCoeffs {
  BnCenter<T> center;
  T k_dy, k_xmu, k_0;
};

template <class T>
PYNN_HOST_DEVICE BnBackwardCoeffs<T> bn_backward_coeffs(const BnStats& s, const T* w,
                                                        double sum_dy, double sum_dy_xmu,
                                                        double count, bool training) {
  const double wd = w ? static_cast<double>(*w) : 1.0;
  const double k_dy = wd * s.invstd;
  if (!training || count == 0.0) return {bn_center<T>(s.mean), static_cast<T>(k_dy), T(0), T(0)};
  return {bn_center<T>(s.mean), static_cast<T>(k_dy),
          static_cast<T>(-k_dy * s.invstd * s.invstd * sum_dy_xmu / count),
          static_cast<T>(-k_dy * sum_dy / count)};
}

template <class T>
PYNN_HOST_DEVICE T bn_backward_input(T dy, T x, const BnBackwardCoeffs<T>& k) {
  return dy * k.k_dy + (bn_centered(x, k.center) * k.k_xmu + k.k_0);
}

}  // namespace pynn
