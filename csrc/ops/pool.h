#pragma once
// 2-D max, average and adaptive average pooling over (N, C, H, W) tensors laid out NCHW or NHWC
// (input, output, indices and grads of one call share the layout). Output sizes are read from the
// output tensors and checked against the window rules of math/pool.h.
//
// Max pooling writes the argmax of each window to `indices`: int64 or int32 hold the flat index
// h*W + w into the input plane, as torch does (int64 is what the user gets back); uint8 holds the
// tap number inside the window (see math/pool.h), what the backward keeps for kernels of up to
// 256 taps; an empty view (no backward needed) stores nothing.
// divisor_override = 0 means none; adaptive pooling takes its windows from the shapes alone.
#include <cstdint>

#include "core/tensor.h"

namespace pynn {

int64_t pool_output_size_host(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                              int64_t dilation, bool ceil_mode);

void max_pool2d_forward_cpu(const TensorView& input, const TensorView& output,
                            const TensorView& indices, int64_t kh, int64_t kw, int64_t sh,
                            int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw);
void max_pool2d_backward_cpu(const TensorView& grad_output, const TensorView& indices,
                             const TensorView& grad_input, int64_t kh, int64_t kw, int64_t sh,
                             int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw);
void avg_pool2d_forward_cpu(const TensorView& input, const TensorView& output, int64_t kh,
                            int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                            bool count_include_pad, int64_t divisor_override);
void avg_pool2d_backward_cpu(const TensorView& grad_output, const TensorView& grad_input,
                             int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                             int64_t pw, bool count_include_pad, int64_t divisor_override);
void adaptive_avg_pool2d_forward_cpu(const TensorView& input, const TensorView& output);
void adaptive_avg_pool2d_backward_cpu(const TensorView& grad_output, const TensorView& grad_input);

#ifdef PYNN_WITH_CUDA
void max_pool2d_forward_cuda(const TensorView& input, const TensorView& output,
                             const TensorView& indices, int64_t kh, int64_t kw, int64_t sh,
                             int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                             uintptr_t stream);
void max_pool2d_backward_cuda(const TensorView& grad_output, const TensorView& indices,
                              const TensorView& grad_input, int64_t kh, int64_t kw, int64_t sh,
                              int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                              uintptr_t stream);
void avg_pool2d_forward_cuda(const TensorView& input, const TensorView& output, int64_t kh,
                             int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                             bool count_include_pad, int64_t divisor_override, uintptr_t stream);
void avg_pool2d_backward_cuda(const TensorView& grad_output, const TensorView& grad_input,
                              int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                              int64_t pw, bool count_include_pad, int64_t divisor_override,
                              uintptr_t stream);
void adaptive_avg_pool2d_forward_cuda(const TensorView& input, const TensorView& output,
                                      uintptr_t stream);
void adaptive_avg_pool2d_backward_cuda(const TensorView& grad_output,
                                       const TensorView& grad_input, uintptr_t stream);
#endif

}  // namespace pynn
