#pragma once
// 2-D convolution (torch.nn.functional.conv2d) as GEMMs over column matrices.
//
// Every tensor is contiguous NCHW (the Python side makes it so): input [N, C, H, W], weight
// [Cout, C/groups, KH, KW], output and grad_output [N, Cout, OH, OW]. stride and dilation are
// (h, w); padding is (top, bottom, left, right) so that 'same' with an even kernel, whose
// padding is one larger at the end, needs no padded copy of the input. The output size must be
// torch's floor((H + top + bottom - dil*(KH-1) - 1) / stride) + 1 (and likewise for W).
//
// CPU: the forward, and the input gradient at stride 1 (conv2d_input_grad_is_conv: a forward
// convolution of grad_output with the flipped, channel-swapped kernel), are implicit GEMMs: the
// weights are packed once into `packed_weight` (>= groups * (rows + 7) * cols elements, rows =
// output channels per group of that convolution, cols = its C/groups*KH*KW) and each (sample,
// group, tile of `tile_cols` output positions) item packs its column panels straight from the
// input into its slot of `workspace`, [slots, >= kcol * round_up(tile_cols, 32) + 16 (+ at
// stride > 1 along W the phase copy of the tile's input rows, cpu/conv.cpp phase_elems)].
// The other input gradients (stride > 1) and the weight gradient run im2col / col2im tiles of
// `workspace` ([slots, >= C/groups*KH*KW*tile_cols (+ phase copy for the weight gradient)])
// and gemm_cpu; `slots` items run at once, each on its own row, the GEMM serial inside (with
// one slot the GEMM and im2col use the pool instead). `partial` ([slots, Cout, C/groups*KH*KW],
// unused with one slot) holds each slot's share of grad_weight before they are summed.
// CUDA: `workspace` is [nb, C*KH*KW*OH*OW]: the columns of nb samples at a time.
// Neither backend needs columns for a depthwise convolution (one input channel per group:
// direct loops), nor either for a 1x1, stride-1, unpadded one (the input is its own column
// matrix; on the CPU its forward is gemm_cpu per tile, its gradients the GEMM paths above, and
// the input gradient of fewer than 8 channels per group is GEMM + col2im as well).
#include <array>
#include <cstdint>

#include "core/tensor.h"

namespace pynn {

using Pair = std::array<int64_t, 2>;
using Quad = std::array<int64_t, 4>;

void conv2d_forward_cpu(const TensorView& input, const TensorView& weight, const TensorView& bias,
                        bool has_bias, const TensorView& output, const TensorView& workspace,
                        const TensorView& packed_weight, Pair stride, Quad padding, Pair dilation,
                        int64_t groups, int64_t tile_cols);
void conv2d_backward_input_cpu(const TensorView& grad_output, const TensorView& weight,
                               const TensorView& grad_input, const TensorView& workspace,
                               const TensorView& packed_weight, Pair stride, Quad padding,
                               Pair dilation, int64_t groups, int64_t tile_cols);
// At stride 1 with padding no larger than the dilated kernel's reach, the input gradient is a
// convolution of grad_output and runs as one (the CPU kernels take the implicit-GEMM path) when
// it has at least 8 output channels (C/groups) per group: with fewer, each packed column panel
// feeds less than one register tile of rows and GEMM + col2im is faster (LeNet's 1-channel
// input: 4.1 vs 1.8 ms).
inline bool conv2d_input_grad_is_conv(Pair stride, Quad padding, Pair dilation, int64_t KH,
                                      int64_t KW, int64_t cin_g) {
  return cin_g >= 8 && stride[0] == 1 && stride[1] == 1 && padding[0] <= dilation[0] * (KH - 1) &&
         padding[1] <= dilation[0] * (KH - 1) && padding[2] <= dilation[1] * (KW - 1) &&
         padding[3] <= dilation[1] * (KW - 1);
}
// Whether the CPU kernels take a direct path (cpu/conv_direct.h: float32, few channels; or
// cpu/conv_blocked.h: float32, many channels) for pass 0 (forward), 1 (input gradient) or 2
// (weight gradient) of this convolution; those paths need no workspace, so Python allocates none.
bool conv2d_direct_cpu(const TensorView& input, const TensorView& weight,
                       const TensorView& output, Pair stride, Quad padding, Pair dilation,
                       int64_t groups, int64_t pass);
void conv2d_backward_weight_cpu(const TensorView& grad_output, const TensorView& input,
                                const TensorView& grad_weight, const TensorView& workspace,
                                const TensorView& partial, Pair stride, Quad padding,
                                Pair dilation, int64_t groups, int64_t tile_cols);
// grad_bias[c] = sum of grad_output[:, c] (accumulated in double).
void conv2d_backward_bias_cpu(const TensorView& grad_output, const TensorView& grad_bias);
// How far the per-element functions that the CUDA kernels run (math/conv.h) are from the CPU
// kernels on a set of small convolutions; a test asserts ~0, so CPU tests cover the GPU's math.
double conv2d_math_selfcheck_cpu();

#ifdef PYNN_WITH_CUDA
void conv2d_forward_cuda(const TensorView& input, const TensorView& weight, const TensorView& bias,
                         bool has_bias, const TensorView& output, const TensorView& workspace,
                         Pair stride, Quad padding, Pair dilation, int64_t groups,
                         uintptr_t stream);
void conv2d_backward_input_cuda(const TensorView& grad_output, const TensorView& weight,
                                const TensorView& grad_input, const TensorView& workspace,
                                Pair stride, Quad padding, Pair dilation, int64_t groups,
                                uintptr_t stream);
void conv2d_backward_weight_cuda(const TensorView& grad_output, const TensorView& input,
                                 const TensorView& grad_weight, const TensorView& workspace,
                                 Pair stride, Quad padding, Pair dilation, int64_t groups,
                                 uintptr_t stream);
void conv2d_backward_bias_cuda(const TensorView& grad_output, const TensorView& grad_bias,
                               uintptr_t stream);
#endif

}  // namespace pynn
