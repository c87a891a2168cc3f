#pragma once
// softmax / log_softmax (log_space selects) along `dim` of a contiguous tensor. The kernels see
// the tensor as (outer, size(dim), inner); `output` is what the backward takes back as `output`.
#include <cstdint>

#include "core/tensor.h"

namespace pynn {
void softmax_forward_cpu(const TensorView& input, const TensorView& output, int64_t dim,
                         bool log_space);
void softmax_backward_cpu(const TensorView& grad_output, const TensorView& output,
                          const TensorView& grad_input, int64_t dim, bool log_space);
#ifdef PYNN_WITH_CUDA
void softmax_forward_cuda(const TensorView& input, const TensorView& output, int64_t dim,
                          bool log_space, uintptr_t stream);
void softmax_backward_cuda(const TensorView& grad_output, const TensorView& output,
                           const TensorView& grad_input, int64_t dim, bool log_space,
                           uintptr_t stream);
#endif

// Shared by the CPU and CUDA entry points: checks the arguments and splits the shape.
struct SoftmaxShape {
  int64_t outer = 1, n = 1, inner = 1;
};
SoftmaxShape softmax_shape(const TensorView& a, const TensorView& b, const TensorView* c,
                           int64_t dim, const char* op, const char* arg_a, const char* arg_b,
                           const char* arg_c);
}  // namespace pynn
