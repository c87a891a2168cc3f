#pragma once
// Batch normalisation (torch.nn.functional.batch_norm). input/output/grad tensors are viewed as
// (N, C, P) with any strides (the CPU kernels are fastest with P of stride 1, NCHW, or C of
// stride 1, channels last and (N, C)); per-channel tensors are 1-D of C elements.
// save_mean / save_invstd are float64 on every device: the forward writes them (batch or running
// statistics) and the backward reads them. `workspace` (float64, C * (3 * S + 2) elements, S
// splits of each channel) is used by the CUDA kernels; the CPU kernels ignore it.
#include <cstdint>
#include <optional>

#include "core/tensor.h"

namespace pynn {
using OptView = std::optional<TensorView>;

void batch_norm_forward_cpu(const TensorView& input, const OptView& weight, const OptView& bias,
                            const OptView& running_mean, const OptView& running_var,
                            const TensorView& output, const TensorView& save_mean,
                            const TensorView& save_invstd, const TensorView& workspace,
                            bool training, double momentum, double eps);
// Any of grad_input, grad_weight, grad_bias may be None (not needed).
void batch_norm_backward_cpu(const TensorView& grad_output, const TensorView& input,
                             const OptView& weight, const TensorView& save_mean,
                             const TensorView& save_invstd, const OptView& grad_input,
                             const OptView& grad_weight, const OptView& grad_bias,
                             const TensorView& workspace, bool training);
#ifdef PYNN_WITH_CUDA
void batch_norm_forward_cuda(const TensorView& input, const OptView& weight, const OptView& bias,
                             const OptView& running_mean, const OptView& running_var,
                             const TensorView& output, const TensorView& save_mean,
                             const TensorView& save_invstd, const TensorView& workspace,
                             bool training, double momentum, double eps, uintptr_t stream);
void batch_norm_backward_cuda(const TensorView& grad_output, const TensorView& input,
                              const OptView& weight, const TensorView& save_mean,
                              const TensorView& save_invstd, const OptView& grad_input,
                              const OptView& grad_weight, const OptView& grad_bias,
                              const TensorView& workspace, bool training, uintptr_t stream);
#endif

// Argument checks shared by the CPU and CUDA entry points (csrc/cpu/batchnorm.cpp).
void batch_norm_check_forward(const TensorView& input, const OptView& weight, const OptView& bias,
                              const OptView& running_mean, const OptView& running_var,
                              const TensorView& output, const TensorView& save_mean,
                              const TensorView& save_invstd, bool training, double eps);
void batch_norm_check_backward(const TensorView& grad_output, const TensorView& input,
                               const OptView& weight, const TensorView& save_mean,
                               const TensorView& save_invstd, const OptView& grad_input,
                               const OptView& grad_weight, const OptView& grad_bias);
}  // namespace pynn
