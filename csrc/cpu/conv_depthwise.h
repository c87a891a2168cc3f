#pragma once
// Depthwise convolution (one input channel per group) on AVX-512 CPUs, float32, unit stride
// along W. conv.cpp's portable loops make one pass over an output row per kernel tap (a call
// and a read-modify-write of the row each); here each vector of 16 outputs of a row sums all
// its taps in a register, one masked load of the input row per tap (the mask drops the lanes
// whose tap falls in the padding or past the row), and is stored once.
//  - forward: y[n, co] = sum over taps of w[co, tap] * x[n, co / m] shifted (m = cout_g);
//  - input gradient, stride 1 both ways: gx[n, c] = sum over the m output channels of c and
//    the taps of w[co, tap] * gy[n, co] shifted back;
//  - weight gradient: per output channel, one accumulator vector per tap (at most 25 taps) over
//    the rows of every sample, reduced across lanes into double per sample.
// Kernels up to 50 taps (7 x 7); no scratch. PYNN_CONV_DIRECT=0 turns them off, as it does the
// other direct kernels.
#include "cpu/conv_direct.h"
#include "math/conv.h"

namespace pynn {

// Whether `pass` of depthwise convolution g runs here (float32 is the caller's condition).
bool conv2d_depthwise_fast_applies(const Conv2dGeom& g, ConvPass pass);

void conv2d_depthwise_forward(const Conv2dGeom& g, const float* x, const float* w, const float* b,
                              float* y);
void conv2d_depthwise_backward_input(const Conv2dGeom& g, const float* gy, const float* w,
                                     float* gx);
// grad_weight (overwritten)
void conv2d_depthwise_backward_weight(const Conv2dGeom& g, const float* gy, const float* x,
                                      float* gw);

}  // namespace pynn
