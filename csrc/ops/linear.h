#pragma once
// y = x @ W^T + b on 2-D views (Python folds any leading dims of the input into the rows), and
// its gradients. Matrix products go through gemm_cpu / gemm_cuda with strides, so transposed or
// sliced operands are never copied; the bias broadcast and the bias-gradient column sums are
// kernels of their own. Absent bias / gradient outputs are passed as None.
#include <cstdint>
#include <optional>

#include "core/tensor.h"

namespace pynn {
// input [M, K], weight [N, K], bias [N], output [M, N] with unit column stride.
void linear_forward_cpu(const TensorView& input, const TensorView& weight,
                        const std::optional<TensorView>& bias, const TensorView& output);
// grad_input [M, K] = grad_output @ weight (needs weight), grad_weight [N, K] = grad_output^T @
// input (needs input), grad_bias [N] = column sums of grad_output; each computed only if given.
void linear_backward_cpu(const TensorView& grad_output, const std::optional<TensorView>& input,
                         const std::optional<TensorView>& weight,
                         const std::optional<TensorView>& grad_input,
                         const std::optional<TensorView>& grad_weight,
                         const std::optional<TensorView>& grad_bias);
#ifdef PYNN_WITH_CUDA
void linear_forward_cuda(const TensorView& input, const TensorView& weight,
                         const std::optional<TensorView>& bias, const TensorView& output,
                         uintptr_t stream);
void linear_backward_cuda(const TensorView& grad_output, const std::optional<TensorView>& input,
                          const std::optional<TensorView>& weight,
                          const std::optional<TensorView>& grad_input,
                          const std::optional<TensorView>& grad_weight,
                          const std::optional<TensorView>& grad_bias, uintptr_t stream);
#endif

namespace detail {
// Shape, dtype and device agreement shared by both backends; returns nothing, throws naming the
// argument.
void check_linear_forward_args(const TensorView& input, const TensorView& weight,
                               const std::optional<TensorView>& bias, const TensorView& output);
void check_linear_backward_args(const TensorView& grad_output,
                                const std::optional<TensorView>& input,
                                const std::optional<TensorView>& weight,
                                const std::optional<TensorView>& grad_input,
                                const std::optional<TensorView>& grad_weight,
                                const std::optional<TensorView>& grad_bias);
}  // namespace detail
}  // namespace pynn
