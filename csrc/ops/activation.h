#pragma once
// Sigmoid, tanh, ReLU and LeakyReLU (kind: ActKind). `saved` is what activation_backward in
// math/activation.h expects: the output, or the input for LeakyReLU with a negative slope.
#include <cstdint>

#include "core/tensor.h"

namespace pynn {
void activation_forward_cpu(const TensorView& input, const TensorView& output, int kind,
                            double slope);
void activation_backward_cpu(const TensorView& grad_output, const TensorView& saved,
                             const TensorView& grad_input, int kind, double slope);
#ifdef PYNN_WITH_CUDA
void activation_forward_cuda(const TensorView& input, const TensorView& output, int kind,
                             double slope, uintptr_t stream);
void activation_backward_cuda(const TensorView& grad_output, const TensorView& saved,
                              const TensorView& grad_input, int kind, double slope,
                              uintptr_t stream);
#endif
}  // namespace pynn
