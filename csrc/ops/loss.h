#pragma once
// mse_loss and cross_entropy (math/loss.h). `reduction` is torch's enum: 0 none, 1 mean, 2 sum.
//
// Reduced losses also write `stats` (float64): the sums the backward needs, so it never
// reduces again. The CUDA launchers take a float64 `workspace` (one row of partial sums per
// block; its first dim caps the grid) and cross_entropy_forward_cuda an int64 `status` of one
// element, where the kernel records the first sample whose class index is out of range; the
// launcher reads it back (one stream synchronisation) and raises, so a bad target is never used
// as an address. The CPU entry points accept and ignore both.
#include <cstdint>
#include <optional>

#include "core/tensor.h"

namespace pynn {

using OptView = std::optional<TensorView>;

// input, target (and weight) share one contiguous shape. output: that shape for 'none', else
// one element. stats: [sum of w (x - t)^2, sum of w]. weight_repeat: how many times each weight
// element appears in the broadcast shape (torch divides a weighted mean by the sum of the
// weight as given, not as broadcast).
void mse_loss_forward_cpu(const TensorView& input, const TensorView& target, const OptView& weight,
                          const TensorView& output, const TensorView& stats,
                          const OptView& workspace, int reduction, double weight_repeat);
void mse_loss_backward_cpu(const TensorView& grad_output, const TensorView& input,
                           const TensorView& target, const OptView& weight,
                           const TensorView& stats, const OptView& grad_input,
                           const OptView& grad_target, const OptView& grad_weight, int reduction,
                           double weight_repeat);

// input (N, C, K) contiguous (K = d1 * ... * dk, 1 without spatial dims). target: int64 (N, K)
// class indices, or (N, C, K) probabilities of input's dtype. weight: (C). log_probs: (N, C, K)
// output, saved for the backward. loss: (N, K) for 'none', else one element.
// stats: [sum of loss terms, sum of w_t over non-ignored samples, sum of smoothing terms].
void cross_entropy_forward_cpu(const TensorView& input, const TensorView& target,
                               const OptView& weight, const TensorView& log_probs,
                               const TensorView& loss, const TensorView& stats,
                               const OptView& workspace, const OptView& status, int reduction,
                               int64_t ignore_index, double label_smoothing);
void cross_entropy_backward_cpu(const TensorView& grad_output, const TensorView& log_probs,
                                const TensorView& target, const OptView& weight,
                                const TensorView& stats, const TensorView& grad_input,
                                const OptView& grad_target, int reduction, int64_t ignore_index,
                                double label_smoothing);

#ifdef PYNN_WITH_CUDA
void mse_loss_forward_cuda(const TensorView& input, const TensorView& target,
                           const OptView& weight, const TensorView& output,
                           const TensorView& stats, const OptView& workspace, int reduction,
                           double weight_repeat, uintptr_t stream);
void mse_loss_backward_cuda(const TensorView& grad_output, const TensorView& input,
                            const TensorView& target, const OptView& weight,
                            const TensorView& stats, const OptView& grad_input,
                            const OptView& grad_target, const OptView& grad_weight, int reduction,
                            double weight_repeat, uintptr_t stream);
void cross_entropy_forward_cuda(const TensorView& input, const TensorView& target,
                                const OptView& weight, const TensorView& log_probs,
                                const TensorView& loss, const TensorView& stats,
                                const OptView& workspace, const OptView& status, int reduction,
                                int64_t ignore_index, double label_smoothing, uintptr_t stream);
void cross_entropy_backward_cuda(const TensorView& grad_output, const TensorView& log_probs,
                                 const TensorView& target, const OptView& weight,
                                 const TensorView& stats, const TensorView& grad_input,
                                 const OptView& grad_target, int reduction, int64_t ignore_index,
                                 double label_smoothing, uintptr_t stream);
#endif

// Argument checks shared by the CPU and CUDA entry points (csrc/cpu/loss.cpp).
struct MseShape {
  int64_t n = 0;
};
MseShape mse_check(const TensorView& input, const TensorView& target, const OptView& weight,
                   const TensorView& out, const TensorView& stats, int reduction, const char* op,
                   const char* out_name);
struct CeShape {
  int64_t n = 0, classes = 0, inner = 0;
  bool prob = false;
};
CeShape ce_check(const TensorView& values, const TensorView& target, const OptView& weight,
                 const TensorView& stats, int reduction, double label_smoothing, const char* op,
                 const char* values_name);
void check_reduction(int reduction, const char* op);

}  // namespace pynn
