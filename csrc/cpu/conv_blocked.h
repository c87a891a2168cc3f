#pragma once
// Blocked direct convolution for float32 layers with many channels on AVX-512 CPUs.
//
// The implicit GEMM puts output positions on the 32-wide vector side of its register tile and
// output channels on the 8-row side. Deep layers have few positions (ResNet's 14 x 14 and 7 x 7,
// 49 positions filling 64 lanes per sample) and pay the column packing on every call. Here the
// roles swap: 32 output channels are the vector lanes (every lane busy once Cout is a multiple
// of 32) and 8 output positions, flattened over the whole batch (n, oh, ow), are the rows, each
// read in place from a copy of the input in 16-channel blocks:
//   xb[group][cb][n][Hp][Wp][16],  zero-padded to Hp x Wp, the extent the taps reach,
// so that tap (kh, kw) of position (n, oh, ow) reads the 16 channels of a block as one cache
// line at xb + n * Hp*Wp*16 + ((oh*sh + kh*dh) * Wp + ow*sw + kw*dw) * 16, whatever the stride,
// dilation or padding. At horizontal stride 1 or 2, with whole channel blocks and output rows of
// 4 or more positions (most layers), the tiles read the input in place instead, up to 8
// positions of one row of each channel, and no copy is made: each tap is summed only over the
// positions that read it inside the input (below), so no padding is read. The weights go into
// panels [group][panel][cb][tap][16][32] (output channels innermost, zero past the last
// channel), and the register tile of 8 positions x 32 channels takes, per (tap, channel), two
// vector loads of the panel and 8 broadcasts from the positions' lines: the GEMM micro-kernel's
// shape, with no column matrix built.
//
// A tile holds the positions of one stretch of an output row (rows of 4 or more positions are
// cut into tiles of at most 8 of as even widths as possible: 7 -> 7, 14 -> 7 + 7, 56 -> 7 x 8;
// narrower rows go 8 positions to a tile, across rows and samples). Each tap is summed only
// over the rows of the tile that read it inside the input, so the products with the padding
// are skipped instead of multiplying the zeros of xb: 18% of a 3x3, pad-1 layer's products at
// 7 x 7 outputs, 9% at 14 x 14. The weight gradient skips them likewise.
//
// The input channels go in K blocks whose slice of the panel (at most 160 KiB) stays in L2 while
// every tile of a work item passes over it; items are (group, panel, range of tiles), taken
// dynamically by the threads, and each packs its own panel slice from the weight (so the
// weight is read once per item, and no packed copy of it goes through memory).
//
// The weight gradient reads the input in place (with whole channel blocks; else the same xb)
// and grad_output transposed, gyT[group][panel][n, oh, ow][32]: a register tile of 8 channels
// of one tap x 32 output channels sums over chunks of 512 positions (two vector loads of gyT
// and 8 broadcasts, from 8 channel planes or one line of xb, per position); items are (group,
// panel, channel block), each writing its own block of grad_weight.
//
// Scratch, the calling thread's (reused from call to call and shared by the passes up to 64 MiB,
// freed at the end of a call above that):
// xb, G * ceil(cin_g/16) * 16 * N * Hp * Wp floats (the input, padded, or for the input
// gradient grad_output, once per phase; none where the tiles read it in place), and for the
// weight gradient gyT, G * N * OH * OW * ceil(cout_g/32) * 32 floats. Per pool thread: a panel
// slice (at most 160 KiB, or one channel block; for the input gradient's phases one slice each,
// the largest at most 160 KiB), the accumulators of an item's tiles (about 64 * 256 floats at
// most) or, for the weight gradient, one channel block's taps x 16 x 32 floats.
//
// Runs the forward, and the input gradient as convolutions of grad_output: at stride 1 one, with
// the flipped kernel and the channel axes swapped; at stride s x t the s*t phases of
// grad_input (conv2d_input_grad_phase), each a stride-1 convolution with the kernel taps that
// reach it, written into every s-th row and t-th column of grad_input. A ResNet downsampling
// 3x3 (stride 2, pad 1) splits into phases of 1, 2, 2 and 4 taps; phases no tap reaches (those
// of odd rows at stride 2 and dilation 2) are zeros. The phases share one set of items: an
// item packs its panel slices of every phase in one pass over the weight, then runs each
// phase's tiles.
#include <cstdint>

#include "math/conv.h"

namespace pynn {

// Whether the blocked kernel takes convolution g (float32 is the caller's condition): an
// AVX-512 CPU whose GEMM kernel choice is AVX-512 (PYNN_GEMM_KERNEL honoured), neither
// PYNN_CONV_DIRECT=0 nor PYNN_CONV_BLOCKED=0 set, not depthwise, non-negative leading
// padding, and at least 16 input and 32 output channels per group with at most 1 in 8 of the
// padded channel blocks and panels idle; a 1x1 kernel only up to 14 x 14 output positions.
bool conv2d_blocked_applies(const Conv2dGeom& g);

// y = conv(x, w) (+ b), y overwritten.
void conv2d_blocked_forward(const Conv2dGeom& g, const float* x, const float* w, const float* b,
                            float* y);

// Whether the input gradient of g runs here: g's kernel is larger than 1x1 or its stride 1, and
// every phase that a tap reaches is a convolution conv2d_blocked_applies takes (its leading
// padding non-negative), except that a 1x1 phase of a larger kernel may have any number of
// positions.
bool conv2d_blocked_input_grad_applies(const Conv2dGeom& g);

// grad_input (overwritten) of y = conv(x, w).
void conv2d_blocked_backward_input(const Conv2dGeom& g, const float* gy, const float* w,
                                   float* gx);

// Whether the weight gradient of g runs here: conv2d_blocked_applies, and at least 8 (group,
// panel of 32 output channels, block of 16 input channels) items to share among the threads.
bool conv2d_blocked_weight_applies(const Conv2dGeom& g);

// grad_weight (overwritten) of y = conv(x, w).
void conv2d_blocked_backward_weight(const Conv2dGeom& g, const float* gy, const float* x,
                                    float* gw);

}  // namespace pynn
