#pragma once
// Index math of a 2-D convolution, shared by the CPU im2col/col2im loops and the CUDA kernels.
// Along one axis an output index o and a kernel tap k read input index o*stride - pad + k*dil;
// "pad" is the leading (top or left) padding, so asymmetric padding ('same' with an even kernel)
// needs nothing more than an output size computed from the total padding.
#include <array>
#include <cstdint>

#include "core/error.h"
#include "core/macros.h"
#include "core/tensor.h"

namespace pynn {

// floor((in + pad_total - dil*(k-1) - 1) / stride) + 1, torch's formula; <= 0 means the kernel
// does not fit in the padded input.
PYNN_HOST_DEVICE int64_t conv_out_size(int64_t in, int64_t pad_total, int64_t k, int64_t stride,
                                       int64_t dil) {
  const int64_t span = in + pad_total - dil * (k - 1) - 1;
  // span may be negative: floor division keeps "does not fit" negative instead of rounding to 0.
  return (span >= 0 ? span / stride : -((-span + stride - 1) / stride)) + 1;
}

PYNN_HOST_DEVICE int64_t conv_in_index(int64_t o, int64_t k, int64_t stride, int64_t pad,
                                       int64_t dil) {
  return o * stride - pad + k * dil;
}

// Ceil of a / b for b > 0 and any sign of a.
PYNN_HOST_DEVICE int64_t div_ceil_signed(int64_t a, int64_t b) {
  return a >= 0 ? (a + b - 1) / b : -((-a) / b);
}

// The outputs [lo, hi) whose tap k lands inside [0, in): the rest read zero padding. Lets the
// CPU loops copy the interior of a row in one run and fill only the edges with zeros.
PYNN_HOST_DEVICE void conv_valid_out_range(int64_t k, int64_t in, int64_t out, int64_t stride,
                                           int64_t pad, int64_t dil, int64_t* lo, int64_t* hi) {
  const int64_t off = pad - k * dil;  // o*stride >= off  and  o*stride <= in - 1 + off
  int64_t l = div_ceil_signed(off, stride);
  int64_t h = in - 1 + off < 0 ? 0 : (in - 1 + off) / stride + 1;
  if (l < 0) l = 0;
  if (h > out) h = out;
  if (h < l) h = l;
  *lo = l;
  *hi = h;
}

// The output index whose tap k reads input index i, or -1 when none does (i falls between
// strides or outside the output): the gather form of col2im, one thread per input element.
PYNN_HOST_DEVICE int64_t conv_out_index(int64_t i, int64_t k, int64_t stride, int64_t pad,
                                        int64_t dil, int64_t out) {
  const int64_t t = i + pad - k * dil;
  if (t < 0 || t % stride != 0) return -1;
  const int64_t o = t / stride;
  return o < out ? o : -1;
}

// Sizes of one convolution, passed by value to the CUDA kernels.
struct Conv2dGeom {
  int64_t N, C, H, W;        // input
  int64_t Cout, KH, KW;      // weight [Cout, C/G, KH, KW]
  int64_t OH, OW;            // output
  int64_t sh, sw, pt, pl, dh, dw, G;
  int64_t cin_g, cout_g;     // channels per group
  int64_t kcol;              // rows of one group's column matrix: cin_g*KH*KW
  int64_t P, HW;             // output and input positions per channel
  bool pointwise;            // 1x1, stride 1, unpadded: the input is its own column matrix
  bool depthwise;            // one input channel per group, groups > 1: direct kernels, whose
                             // GEMMs would be 1 x KH*KW; no columns either
};

// Reads the sizes from the views and checks that they describe one convolution; every message
// names the argument. `out` is the output or grad_output.
inline Conv2dGeom conv2d_geom(const TensorView& input, const TensorView& weight,
                              const TensorView& out, const std::array<int64_t, 2>& stride,
                              const std::array<int64_t, 4>& padding,
                              const std::array<int64_t, 2>& dilation, int64_t groups,
                              const char* op, const char* in_name, const char* out_name) {
  check_dim(input, 4, op, in_name);
  check_dim(weight, 4, op, "weight");
  check_dim(out, 4, op, out_name);
  PYNN_CHECK(stride[0] > 0 && stride[1] > 0, op, ": stride must be positive");
  PYNN_CHECK(dilation[0] > 0 && dilation[1] > 0, op, ": dilation must be positive");
  PYNN_CHECK(padding[0] >= 0 && padding[1] >= 0 && padding[2] >= 0 && padding[3] >= 0, op,
             ": padding must be non-negative");
  PYNN_CHECK(groups > 0, op, ": groups must be positive, got ", groups);
  Conv2dGeom g{};
  g.N = input.sizes[0];
  g.C = input.sizes[1];
  g.H = input.sizes[2];
  g.W = input.sizes[3];
  g.Cout = weight.sizes[0];
  g.KH = weight.sizes[2];
  g.KW = weight.sizes[3];
  g.OH = out.sizes[2];
  g.OW = out.sizes[3];
  g.sh = stride[0];
  g.sw = stride[1];
  g.pt = padding[0];
  g.pl = padding[2];
  g.dh = dilation[0];
  g.dw = dilation[1];
  g.G = groups;
  PYNN_CHECK(g.KH > 0 && g.KW > 0, op, ": weight has an empty kernel ", weight.shape_str());
  PYNN_CHECK(g.C % groups == 0 && g.Cout % groups == 0, op, ": groups ", groups,
             " must divide the input channels ", g.C, " and the output channels ", g.Cout);
  g.cin_g = g.C / groups;
  g.cout_g = g.Cout / groups;
  PYNN_CHECK(weight.sizes[1] == g.cin_g, op, ": weight ", weight.shape_str(), " expects ",
             weight.sizes[1] * groups, " input channels, ", in_name, " has ", g.C);
  const int64_t oh = conv_out_size(g.H, padding[0] + padding[1], g.KH, g.sh, g.dh);
  const int64_t ow = conv_out_size(g.W, padding[2] + padding[3], g.KW, g.sw, g.dw);
  PYNN_CHECK(oh > 0 && ow > 0, op, ": kernel ", weight.shape_str(), " (dilated) is larger than the ",
             "padded ", in_name, " ", input.shape_str());
  PYNN_CHECK(out.sizes[0] == g.N && out.sizes[1] == g.Cout && g.OH == oh && g.OW == ow, op, ": ",
             out_name, " has shape ", out.shape_str(), ", expected [", g.N, ", ", g.Cout, ", ", oh,
             ", ", ow, "]");
  g.kcol = g.cin_g * g.KH * g.KW;
  g.P = g.OH * g.OW;
  g.HW = g.H * g.W;
  g.pointwise = g.KH == 1 && g.KW == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 &&
                padding[1] == 0 && padding[3] == 0;
  g.depthwise = g.cin_g == 1 && g.G > 1;
  return g;
}

// ---- the input gradient as convolutions of grad_output ----
// Input index i receives from output o through tap k when i = o*s - p + k*d. Split the inputs
// by phase, i = ph + s*i': such an input receives through the taps k with ph + p - k*d
// divisible by s, from output o = i' + (ph + p - k*d) / s. Those taps run k0, k0 - step, ...
// down to 0 (step = s / gcd(s, d)), and their offsets (ph + p - k*d) / s rise by d*step/s
// along them, so a phase is a stride-1 convolution of grad_output: the phase's taps flipped,
// dilation d*step/s, leading padding minus the offset of k0. At stride 1 the one phase holds
// every tap, dilation d and padding d*(K-1) - p: the familiar transposed convolution.
struct ConvPhaseAxis {
  int64_t taps;       // kernel taps of the phase; 0 when no output reaches its inputs
  int64_t first;      // the largest of them: the phase kernel's tap 0
  int64_t step;       // between the phase's taps in the kernel (taken downward)
  int64_t dil, pad;   // of the phase convolution (pad < 0 when every offset is positive)
  int64_t out;        // inputs in the phase: those of [0, in) that are ph mod s
};

inline ConvPhaseAxis conv_phase_axis(int64_t ph, int64_t in, int64_t K, int64_t s, int64_t p,
                                     int64_t d) {
  ConvPhaseAxis a{0, 0, 1, 1, 0, ph < in ? (in - ph + s - 1) / s : 0};
  int64_t step = 1;
  while (step * d % s != 0) ++step;
  for (int64_t k = K - 1; k >= 0; --k) {
    if (((ph + p - k * d) % s + s) % s != 0) continue;
    a.taps = k / step + 1;
    a.first = k;
    a.step = step;
    a.dil = step * d / s;
    a.pad = -(ph + p - k * d) / s;  // exact division
    break;
  }
  return a;
}

// Phase (ph, pw) of g's input gradient: grad_input[n, c, ph + sh*i, pw + sw*j] for the
// positions (i, j) of `geom`, a stride-1 convolution of grad_output (channel axes swapped per
// group). Its tap (a, b) is g's weight tap tap0 + a*tap_row + b*tap_col (flattened kh*KW + kw;
// both steps are negative: the kernel flipped). `empty`: no tap reaches these inputs, whose
// gradient is zero. At stride 1, phase (0, 0) is the whole gradient.
struct ConvInputGradPhase {
  Conv2dGeom geom;
  int64_t tap0, tap_row, tap_col;
  bool empty;
};

inline ConvInputGradPhase conv2d_input_grad_phase(const Conv2dGeom& g, int64_t ph, int64_t pw) {
  const ConvPhaseAxis h = conv_phase_axis(ph, g.H, g.KH, g.sh, g.pt, g.dh);
  const ConvPhaseAxis w = conv_phase_axis(pw, g.W, g.KW, g.sw, g.pl, g.dw);
  Conv2dGeom t = g;
  t.C = g.Cout, t.H = g.OH, t.W = g.OW;
  t.Cout = g.C, t.OH = h.out, t.OW = w.out;
  t.KH = h.taps, t.KW = w.taps;
  t.sh = 1, t.sw = 1;
  t.pt = h.pad, t.pl = w.pad;
  t.dh = h.dil, t.dw = w.dil;
  t.cin_g = g.cout_g, t.cout_g = g.cin_g;
  t.kcol = g.cout_g * t.KH * t.KW;
  t.P = t.OH * t.OW, t.HW = g.P;
  t.pointwise = false;
  return {t, h.first * g.KW + w.first, -h.step * g.KW, -w.step, t.KH == 0 || t.KW == 0};
}

// ---- per-element math of the CUDA kernels ----
// One thread computes one of these. The CPU kernels run the same sums as row-segment loops;
// conv2d_math_selfcheck_cpu (cpu/conv.cpp) compares the two so CPU tests cover these too.

// Column entry (r, p) of one sample, r = (c, kh, kw) over all C channels: the input value output
// position p reads through tap (kh, kw) of channel c, or 0 in the padding. x: [C, H, W].
template <class T>
PYNN_HOST_DEVICE T im2col_value(const Conv2dGeom& g, const T* x, int64_t r, int64_t p) {
  const int64_t kk = g.KH * g.KW;
  const int64_t c = r / kk, kh = (r / g.KW) % g.KH, kw = r % g.KW;
  const int64_t ih = conv_in_index(p / g.OW, kh, g.sh, g.pt, g.dh);
  const int64_t iw = conv_in_index(p % g.OW, kw, g.sw, g.pl, g.dw);
  return (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W) ? x[(c * g.H + ih) * g.W + iw] : T(0);
}

// The adjoint: the sum of the column entries of one sample ([C*KH*KW, P]) that were read from
// input element (c, ih, iw).
template <class T>
PYNN_HOST_DEVICE T col2im_value(const Conv2dGeom& g, const T* col, int64_t c, int64_t ih,
                                int64_t iw) {
  const T* base = col + c * g.KH * g.KW * g.P;
  T sum = T(0);
  for (int64_t kh = 0; kh < g.KH; ++kh) {
    const int64_t oh = conv_out_index(ih, kh, g.sh, g.pt, g.dh, g.OH);
    if (oh < 0) continue;
    for (int64_t kw = 0; kw < g.KW; ++kw) {
      const int64_t ow = conv_out_index(iw, kw, g.sw, g.pl, g.dw, g.OW);
      if (ow >= 0) sum += base[(kh * g.KW + kw) * g.P + oh * g.OW + ow];
    }
  }
  return sum;
}

// Depthwise (one input channel per group): output channel co reads input channel co / cout_g.
// Output (n, co, p) including the bias (b may be null).
template <class T>
PYNN_HOST_DEVICE T depthwise_output(const Conv2dGeom& g, const T* x, const T* w, const T* b,
                                    int64_t n, int64_t co, int64_t p) {
  const int64_t oh = p / g.OW, ow = p % g.OW;
  const T* xc = x + (n * g.C + co / g.cout_g) * g.HW;
  const T* wc = w + co * g.KH * g.KW;
  T sum = b ? b[co] : T(0);
  for (int64_t kh = 0; kh < g.KH; ++kh) {
    const int64_t ih = conv_in_index(oh, kh, g.sh, g.pt, g.dh);
    if (ih < 0 || ih >= g.H) continue;
    for (int64_t kw = 0; kw < g.KW; ++kw) {
      const int64_t iw = conv_in_index(ow, kw, g.sw, g.pl, g.dw);
      if (iw >= 0 && iw < g.W) sum += wc[kh * g.KW + kw] * xc[ih * g.W + iw];
    }
  }
  return sum;
}

// grad_input (n, c, ih, iw): every output of c's cout_g channels that read it, times its tap.
template <class T>
PYNN_HOST_DEVICE T depthwise_grad_input(const Conv2dGeom& g, const T* gy, const T* w, int64_t n,
                                        int64_t c, int64_t ih, int64_t iw) {
  T sum = T(0);
  for (int64_t co = c * g.cout_g; co < (c + 1) * g.cout_g; ++co) {
    const T* gyc = gy + (n * g.Cout + co) * g.P;
    const T* wc = w + co * g.KH * g.KW;
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      const int64_t oh = conv_out_index(ih, kh, g.sh, g.pt, g.dh, g.OH);
      if (oh < 0) continue;
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const int64_t ow = conv_out_index(iw, kw, g.sw, g.pl, g.dw, g.OW);
        if (ow >= 0) sum += wc[kh * g.KW + kw] * gyc[oh * g.OW + ow];
      }
    }
  }
  return sum;
}

// One term of grad_weight (co, kh, kw): output position t = n*P + p's gradient times the input
// it read through that tap (0 when the tap is in the padding).
template <class T, class Acc>
PYNN_HOST_DEVICE Acc depthwise_grad_weight_term(const Conv2dGeom& g, const T* gy, const T* x,
                                                int64_t co, int64_t kh, int64_t kw, int64_t t) {
  const int64_t n = t / g.P, p = t % g.P;
  const int64_t ih = conv_in_index(p / g.OW, kh, g.sh, g.pt, g.dh);
  const int64_t iw = conv_in_index(p % g.OW, kw, g.sw, g.pl, g.dw);
  if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return Acc(0);
  return Acc(gy[(n * g.Cout + co) * g.P + p]) *
         Acc(x[(n * g.C + co / g.cout_g) * g.HW + ih * g.W + iw]);
}

}  // namespace pynn
