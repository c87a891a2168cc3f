#pragma once
// Local response normalisation across channels (torch.nn.functional.local_response_norm).
// Every tensor is viewed as (N, C, P): P is all spatial dims flattened. Any strides are accepted;
// the CPU kernels vectorise over pixels, directly when P has stride 1 (NCHW), through a
// gathered copy of each block of pixels otherwise (channels last).
// `scale` (k + alpha/size * window sum of squares) is written by the forward for the backward;
// an empty scale of another shape than the input's skips writing it (inference).
#include <cstdint>

#include "core/tensor.h"

namespace pynn {
void lrn_forward_cpu(const TensorView& input, const TensorView& output, const TensorView& scale,
                     int64_t size, double alpha, double beta, double k);
void lrn_backward_cpu(const TensorView& grad_output, const TensorView& input,
                      const TensorView& scale, const TensorView& grad_input, int64_t size,
                      double alpha, double beta);
#ifdef PYNN_WITH_CUDA
void lrn_forward_cuda(const TensorView& input, const TensorView& output, const TensorView& scale,
                      int64_t size, double alpha, double beta, double k, uintptr_t stream);
void lrn_backward_cuda(const TensorView& grad_output, const TensorView& input,
                       const TensorView& scale, const TensorView& grad_input, int64_t size,
                       double alpha, double beta, uintptr_t stream);
#endif

// Shared argument checks of the CPU and CUDA entry points (csrc/cpu/lrn.cpp).
void lrn_check_forward(const TensorView& input, const TensorView& output,
                       const TensorView& scale, int64_t size, bool& write_scale);
void lrn_check_backward(const TensorView& grad_output, const TensorView& input,
                        const TensorView& scale, const TensorView& grad_input, int64_t size);
}  // namespace pynn
