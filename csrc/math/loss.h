#pragma once
// MSE and cross-entropy math shared by the CPU loops and the CUDA kernels.
//
// Cross-entropy is log_softmax over the class dim fused with the loss. Per sample i (a position
// of the (N, d1, ..., dk) grid) with log-probabilities lp_c = x_c - max - log(sum exp(x - max)):
//   class target t:       nll_i = -w_t lp_t,  smooth_i = -sum_c w_c lp_c   (both 0 if ignored)
//                         loss_i = (1 - ls) nll_i + (ls / C) smooth_i
//   probability target q: loss_i = -sum_c w_c q'_c lp_c,  q'_c = (1 - ls) q_c + ls / C
// (w_c = 1 without a weight). torch's reductions are reproduced: with class targets 'mean'
// divides both parts by the sum of w_t over the non-ignored samples (their count without a
// weight; torch >= 1.12 no longer counts ignored samples in the smoothing part, pytorch#73205),
// so all-ignored gives NaN; with probability targets 'mean' divides by the number of samples.
#include <cmath>
#include <cstdint>

#include "core/macros.h"

namespace pynn {

enum class Reduction : int { None = 0, Mean = 1, Sum = 2 };  // torch's _Reduction enum

// ---- MSE ----

template <class T>
PYNN_HOST_DEVICE T mse_term(T x, T t) {
  const T d = x - t;
  return d * d;
}

// d/dx of coef * (x - t)^2; d/dt is its negation.
template <class T>
PYNN_HOST_DEVICE T mse_grad(T x, T t, T coef) {
  return T(2) * (x - t) * coef;
}

// ---- cross-entropy ----

// Slots of the per-call statistics the forward writes (float64) and the backward reads.
enum CeStat : int { kStatLoss = 0, kStatWeight = 1, kStatSmooth = 2, kNumStats = 3 };

enum class TargetKind : int { Valid = 0, Ignored = 1, OutOfRange = 2 };

PYNN_HOST_DEVICE TargetKind classify_target(int64_t t, int64_t classes, int64_t ignore_index) {
  if (t == ignore_index) return TargetKind::Ignored;
  return (t >= 0 && t < classes) ? TargetKind::Valid : TargetKind::OutOfRange;
}

// Smoothed probability target.
template <class T>
PYNN_HOST_DEVICE T smoothed_target(T q, T smoothing, T inv_classes) {
  return q * (T(1) - smoothing) + smoothing * inv_classes;
}

// sum_c smoothed_target(q_c) f_c from sum_q = sum_c q_c f_c and sum_f = sum_c f_c: the target is
// linear in q, so a row's sum splits into two plain sums that vectorise.
template <class A>
PYNN_HOST_DEVICE A smoothed_target_sum(A sum_q, A sum_f, A smoothing, A inv_classes) {
  return (A(1) - smoothing) * sum_q + smoothing * inv_classes * sum_f;
}

// Loss of one sample from its partial sums (class targets); `nll` and `smooth` are the sample's
// -w_t lp_t and -sum_c w_c lp_c.
template <class T>
PYNN_HOST_DEVICE T class_loss(T nll, T smooth, T smoothing, T inv_classes) {
  return smoothing > T(0) ? (T(1) - smoothing) * nll + smoothing * inv_classes * smooth : nll;
}

// Reduced class-target loss from the sums over samples of nll, of w_t over the non-ignored
// samples, and of smooth.
template <class A>
PYNN_HOST_DEVICE A class_loss_reduced(Reduction r, A nll, A wsum, A smooth, A smoothing,
                                      A inv_classes) {
  if (r == Reduction::Mean) {
    nll = nll / wsum;
    smooth = smooth / wsum;
  }
  return smoothing > A(0) ? (A(1) - smoothing) * nll + smoothing * inv_classes * smooth : nll;
}

// d loss_i / d x_c for a class target, given the sample's gradient scales for its nll part (a)
// and its smoothing part (b), p_c = exp(lp_c) and wsum_all = sum of all class weights.
template <class T>
PYNN_HOST_DEVICE T class_grad(T p, bool is_target, T w_target, T w_c, T a, T b, T wsum_all) {
  return a * w_target * (is_target ? p - T(1) : p) + b * (p * wsum_all - w_c);
}

// d loss_i / d x_c for a probability target: coef * (p_c sum_k w_k q'_k - w_c q'_c).
template <class T>
PYNN_HOST_DEVICE T prob_grad(T p, T wq, T sum_wq, T coef) {
  return coef * (p * sum_wq - wq);
}

// d loss_i / d q_c (the raw target): -coef w_c (1 - ls) lp_c.
template <class T>
PYNN_HOST_DEVICE T prob_grad_target(T lp, T w_c, T smoothing, T coef) {
  return -coef * w_c * (T(1) - smoothing) * lp;
}

}  // namespace pynn
