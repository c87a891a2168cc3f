#pragma once
// Direct CPU convolution kernels for layers with few channels, such as LeNet-5's 6 -> 16 5x5
// layer. There the implicit GEMM is bound by its packing: each packed column element is reused
// by at most 16 output channels, so building the panels costs about as much as multiplying
// them. These kernels read the input rows straight from memory, one vector of 16 output
// positions along a row at a time, and multiply them by broadcast weights.
//
// They run for float32 on CPUs whose GEMM kernel choice is AVX-512 (PYNN_GEMM_KERNEL honoured),
// for ungrouped convolutions with stride 1, dilation 1, at most 16 input and 16 output
// channels, kernel width <= 7 and each padding at most kernel size - 1; every other case (and
// PYNN_CONV_DIRECT=0, which the tests use to cover the general path on the same shapes) takes
// the implicit GEMM. Scratch, only with padding: each thread keeps a zero-padded copy of the one
// sample it works on (at most 16 planes of (H + pads) x (W + pads) floats, grow-only; for the
// input gradient the sample of grad_output, padded by K - 1 - pad), and the weight gradient
// pads the whole input once per call (N x C x (H + pads) x (W + pads) floats, freed after it).
#include "core/tensor.h"
#include "math/conv.h"

namespace pynn {

bool conv2d_direct_applies(const Conv2dGeom& g, DType dtype);

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
