#pragma once
// Direct CPU convolution kernels for layers with few channels, where the implicit GEMM is bound
// by its packing (each packed column element feeds at most Cout multiply-adds, so with few
// output channels building the panels costs about as much as multiplying them):
//
//  - rows: at most 16 input and 16 output channels (LeNet-5's 1 -> 6 and 6 -> 16 layers). The
//    forward and both gradients read the input rows straight from memory, 16 positions along a
//    row per vector, times broadcast weights. Stride 1, dilation 1, each padding at most
//    kernel size - 1, kernel width <= 7.
//  - channels (forward only): at most 4 input channels and 16, 32, 48 or 64 output channels (the
//    first layer of AlexNet, VGG, ResNet, GoogLeNet on RGB images). The output channels are the
//    vector lanes and a few positions of a row are broadcast from the input, so no lane is idle
//    whatever the width or stride; the columns whose windows cross the left or right padding
//    take the same kernel down a block of rows, on a zero-bordered copy of the column's strip.
//
// Both run for float32, one group, on CPUs whose GEMM kernel choice is AVX-512
// (PYNN_GEMM_KERNEL honoured); PYNN_CONV_DIRECT=0 turns them off (the tests use it to cover the
// implicit GEMM on the same shapes). Scratch, only for the rows kernels with padding: each
// thread keeps a zero-padded copy of the one sample it works on (at most 16 planes of
// (H + pads) x (W + pads) floats, grow-only; for the input gradient the sample of grad_output,
// padded by K - 1 - pad), and the weight gradient pads the whole input once per call
// (N x C x (H + pads) x (W + pads) floats, freed after it). The channels kernel keeps, per
// thread, a row of Cout x OW outputs before writing it out as NCHW (at most 64 x (OW + 24)
// floats), the edge columns' outputs for a block of R = 24 / (Cout / 16) rows (at most
// 64 x R per edge column) and one edge strip (C x ((R - 1) sh + (KH - 1) dh + 1) x
// ((KW - 1) dw + 1) floats).
#include <algorithm>
#include <cstdint>

#include "core/parallel.h"
#include "core/tensor.h"
#include "math/conv.h"

namespace pynn {

// The kernel of the input gradient at stride 1, one group, as a row-major [C, Cout * KH * KW]
// matrix: dst[ci, co * kk + j] = w[co, ci, kk - 1 - j] (kk = KH * KW; flipped, channel axes
// swapped). Shared by the direct kernels and conv.cpp's few-positions GEMM.
template <class T>
void conv2d_flipped_weight(const T* w, int64_t Cout, int64_t C, int64_t kk, T* dst) {
  // 8 input channels at a time: w[co, ci0:ci0+8, :] is one contiguous run per co
  parallel_for(0, (C + 7) / 8, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t ci0 = b0 * 8; ci0 < std::min(C, b1 * 8); ci0 += 8)
      for (int64_t co = 0; co < Cout; ++co)
        for (int64_t ci = ci0; ci < std::min(C, ci0 + 8); ++ci) {
          const T* src = w + (co * C + ci) * kk + (kk - 1);
          T* d = dst + ci * Cout * kk + co * kk;
          for (int64_t j = 0; j < kk; ++j) d[j] = src[-j];
        }
  });
}

enum class ConvPass : int { forward = 0, input_grad = 1, weight_grad = 2 };

// False when PYNN_CONV_DIRECT=0 asks for the implicit GEMM everywhere (the tests use it to cover
// it on shapes that the direct, blocked (conv_blocked.h) and flat stride-1 kernels would take).
bool conv2d_direct_enabled();

// Whether `pass` of this convolution runs here (rows or channels kernels) instead of the
// implicit GEMM.
bool conv2d_direct_applies(const Conv2dGeom& g, DType dtype, ConvPass pass);

// y = conv(x, w) + b (b may be null)
void conv2d_direct_forward(const Conv2dGeom& g, const float* x, const float* w, const float* b,
                           float* y);
// grad_input = the full correlation of grad_output with the flipped kernel
void conv2d_direct_backward_input(const Conv2dGeom& g, const float* gy, const float* w,
                                  float* gx);
// grad_weight (overwritten)
void conv2d_direct_backward_weight(const Conv2dGeom& g, const float* gy, const float* x,
                                   float* gw);

}  // namespace pynn
