#pragma once
// Window and index arithmetic of 2-D pooling, one spatial dimension at a time. The CPU loops and
// the CUDA kernels call exactly these functions, so the CPU tests check the windows, divisors and
// "which outputs see this input" ranges that the GPU uses. Every rule follows torch's pooling:
//   output size   floor((in + 2p - d(k-1) - 1) / s) + 1, ceil_mode rounds up but drops a last
//                 window that would start past the input and its left padding;
//   max pool      taps start + j*d for j < k that fall inside [0, in);
//   avg pool      [o*s - p, min(o*s - p + k, in + p)) clipped to [0, in); the unclipped length is
//                 the count_include_pad divisor, so padding counts but the ceil_mode overhang
//                 beyond in + p does not;
//   adaptive avg  [floor(o*in/out), ceil((o+1)*in/out)).
#include <climits>
#include <cstdint>
#include <type_traits>

#include "core/macros.h"
#include "core/tensor.h"

namespace pynn {

// Rounds toward minus infinity (C++ division truncates toward zero); b > 0.
PYNN_HOST_DEVICE int64_t pool_div_floor(int64_t a, int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

PYNN_HOST_DEVICE int64_t pool_min(int64_t a, int64_t b) { return a < b ? a : b; }
PYNN_HOST_DEVICE int64_t pool_max(int64_t a, int64_t b) { return a > b ? a : b; }

// May return <= 0 for a kernel larger than the padded input; callers reject that.
PYNN_HOST_DEVICE int64_t pool_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                                          int64_t dilation, bool ceil_mode) {
  const int64_t span = in + 2 * pad - dilation * (kernel - 1) - 1;
  int64_t out = pool_div_floor(span + (ceil_mode ? stride - 1 : 0), stride) + 1;
  // A ceil_mode window that would start in the right padding (or beyond) sees no input: drop it.
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

// One spatial dimension of a pooling: input and output length and the window geometry.
struct PoolDim {
  int64_t in, out, kernel, stride, pad, dilation;
};

// ---- max pooling ----

// The taps of output o that fall inside the input: positions first + j*dilation, j < count.
// When count is 0 (only possible with dilation: every tap lands in padding) `first` is still the
// first tap at or after 0, because torch reports that position as the argmax of such a window.
struct MaxTaps {
  int64_t first, count;
  int64_t skipped;  // kernel taps before `first` (in the padding)
};

PYNN_HOST_DEVICE MaxTaps max_pool_taps(int64_t o, const PoolDim& d) {
  const int64_t start = o * d.stride - d.pad;
  const int64_t j0 = start < 0 ? (-start + d.dilation - 1) / d.dilation : 0;
  const int64_t last = d.in - 1 - start;  // the largest offset from start still inside
  const int64_t j1 = last < 0 ? 0 : pool_min(d.kernel, last / d.dilation + 1);
  return {start + j0 * d.dilation, pool_max(j1 - j0, 0), j0};
}

// torch's scan rule: the first strictly larger value wins, and a NaN always wins, so the result
// is NaN (with the last NaN's index) as soon as the window holds one.
template <class T>
PYNN_HOST_DEVICE bool max_pool_takes(T v, T current) {
  return (v > current) | (v != v);  // bitwise: no branch, so loops over it vectorise
}

// Outputs [lo, hi) whose window span [o*s - p, o*s - p + span) contains input position i; the
// gather-style backward kernels walk these instead of scattering with atomics.
PYNN_HOST_DEVICE void pool_covering(int64_t i, int64_t span, int64_t stride, int64_t pad,
                                    int64_t out, int64_t& lo, int64_t& hi) {
  const int64_t a = i + pad - span + 1;
  lo = a <= 0 ? 0 : (a + stride - 1) / stride;
  hi = pool_min(out, (i + pad) / stride + 1);
}

// Whether input position i is a tap of output o (inside the span, on the dilation grid).
PYNN_HOST_DEVICE bool max_pool_is_tap(int64_t i, int64_t o, const PoolDim& d) {
  const int64_t off = i - (o * d.stride - d.pad);
  return off >= 0 && off % d.dilation == 0 && off / d.dilation < d.kernel;
}

struct MaxPoolParams {
  PoolDim h, w;
};

// How a window's argmax is stored. Wide types (int64 for the user, int32 otherwise) hold the flat
// index h*W + w into the input plane, as torch reports it. uint8 holds the tap number
// jh*kernel_w + jw inside the window, counted from the window's first (possibly padded) position:
// a quarter of int32's memory traffic, for kernels of up to 256 taps.
template <class I>
constexpr bool kPoolTapIndex = std::is_same<I, uint8_t>::value;
constexpr int64_t kPoolMaxTapIndex = 256;

// The stored argmax naming input (h, w), a tap of output (oh, ow).
template <class I>
PYNN_HOST_DEVICE int64_t max_pool_index(int64_t h, int64_t w, int64_t oh, int64_t ow,
                                        const MaxPoolParams& p) {
  if constexpr (kPoolTapIndex<I>) {
    const int64_t dh = h - (oh * p.h.stride - p.h.pad), dw = w - (ow * p.w.stride - p.w.pad);
    // Dilation 1 is the common case: skip two integer divisions.
    const int64_t jh = p.h.dilation == 1 ? dh : dh / p.h.dilation;
    const int64_t jw = p.w.dilation == 1 ? dw : dw / p.w.dilation;
    return jh * p.w.kernel + jw;
  } else {
    return h * p.w.in + w;
  }
}

// ---- average pooling (fixed windows and adaptive) ----

// Clipped window [start, end) and the length counted by count_include_pad.
struct AvgWindow {
  int64_t start, end, padded;
};

struct AvgDim {
  int64_t in, out, kernel, stride, pad;
  bool adaptive;  // kernel/stride/pad unused when set
};

PYNN_HOST_DEVICE AvgWindow avg_pool_window(int64_t o, const AvgDim& d) {
  if (d.adaptive) {
    // floor(o*in/out) and ceil((o+1)*in/out) in integers, exact where floats would round.
    const int64_t start = (o * d.in) / d.out;
    const int64_t end = 1 + ((o + 1) * d.in - 1) / d.out;
    return {start, end, end - start};
  }
  const int64_t start = o * d.stride - d.pad;
  const int64_t end = pool_min(start + d.kernel, d.in + d.pad);
  return {pool_max(start, 0), pool_min(end, d.in), end - start};
}

PYNN_HOST_DEVICE void avg_pool_covering(int64_t i, const AvgDim& d, int64_t& lo, int64_t& hi) {
  if (d.adaptive) {
    // start(o) <= i  <=>  o < (i+1)*out/in;   end(o) > i  <=>  o >= floor(i*out/in).
    lo = (i * d.out) / d.in;
    hi = pool_min(d.out, ((i + 1) * d.out + d.in - 1) / d.in);
    return;
  }
  // The clip to in + p never cuts a real input position, so the unclipped span decides.
  pool_covering(i, d.kernel, d.stride, d.pad, d.out, lo, hi);
}

struct AvgPoolParams {
  AvgDim h, w;
  bool count_include_pad;
  int64_t divisor_override;  // 0: none
};

PYNN_HOST_DEVICE int64_t avg_pool_divisor(const AvgPoolParams& p, const AvgWindow& wh,
                                          const AvgWindow& ww) {
  if (p.divisor_override != 0) return p.divisor_override;
  if (p.count_include_pad) return wh.padded * ww.padded;
  return (wh.end - wh.start) * (ww.end - ww.start);
}

// ---- layouts and argument checks (host only; shared by the CPU and CUDA entry points) ----

// The two dense layouts the kernels walk: NCHW (torch.contiguous_format) and NHWC
// (torch.channels_last).
enum class PoolLayout : int { NCHW = 0, NHWC = 1 };

// Size-1 dims may carry any stride, so a tensor can satisfy both layouts at once.
inline bool pool_has_layout(const TensorView& t, PoolLayout layout) {
  if (t.dim != 4) return false;
  if (t.numel() == 0) return true;
  static const int kOrder[2][4] = {{3, 2, 1, 0}, {1, 3, 2, 0}};  // fastest dim first
  int64_t expected = 1;
  for (int d : kOrder[static_cast<int>(layout)]) {
    if (t.sizes[d] == 1) continue;
    if (t.strides[d] != expected) return false;
    expected *= t.sizes[d];
  }
  return true;
}

struct PoolGeometry {
  int64_t N, C, H, W, OH, OW;
  PoolLayout layout;
};

// x is the (N, C, H, W) side and y the (N, C, OH, OW) side of one call; both must be 4-D, share
// dtype and device, and be dense in one common layout.
inline PoolGeometry pool_check_pair(const TensorView& x, const TensorView& y, const char* op,
                                    const char* xn, const char* yn) {
  check_dim(x, 4, op, xn);
  check_dim(y, 4, op, yn);
  check_defined(x, op, xn);
  check_defined(y, op, yn);
  check_same_dtype(x, y, op, xn, yn);
  check_same_device(x, y, op, xn, yn);
  PYNN_CHECK(x.sizes[0] == y.sizes[0] && x.sizes[1] == y.sizes[1], op, ": ", xn, " ",
             x.shape_str(), " and ", yn, " ", y.shape_str(), " must agree in batch and channels");
  PoolGeometry g{x.sizes[0], x.sizes[1], x.sizes[2], x.sizes[3], y.sizes[2], y.sizes[3],
                 PoolLayout::NCHW};
  if (!(pool_has_layout(x, PoolLayout::NCHW) && pool_has_layout(y, PoolLayout::NCHW))) {
    PYNN_CHECK(pool_has_layout(x, PoolLayout::NHWC) && pool_has_layout(y, PoolLayout::NHWC), op,
               ": ", xn, " and ", yn, " must both be contiguous or both channels_last");
    g.layout = PoolLayout::NHWC;
  }
  return g;
}

// The output length must be what floor or ceil mode gives for this window.
inline void pool_check_out(const char* op, const char* dim, int64_t in, int64_t out, int64_t k,
                           int64_t s, int64_t p, int64_t d) {
  PYNN_CHECK(k > 0 && s > 0 && d > 0 && p >= 0, op, ": kernel_size, stride and dilation must be "
             "positive and padding non-negative, got kernel_size=", k, ", stride=", s,
             ", padding=", p, ", dilation=", d, " along ", dim);
  PYNN_CHECK(p <= k / 2, op, ": padding should be at most half of kernel_size, got padding=", p,
             " and kernel_size=", k, " along ", dim);
  PYNN_CHECK(in > 0, op, ": input has size 0 along ", dim);
  const int64_t lo = pool_output_size(in, k, s, p, d, false);
  const int64_t hi = pool_output_size(in, k, s, p, d, true);
  PYNN_CHECK(out >= 1 && (out == lo || out == hi), op, ": output size ", out, " along ", dim,
             " does not match input size ", in, " (ceil_mode=False gives ", lo,
             ", ceil_mode=True gives ", hi, ")");
}

inline MaxPoolParams make_max_pool_params(const PoolGeometry& g, int64_t kh, int64_t kw,
                                          int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                          int64_t dh, int64_t dw, const char* op) {
  pool_check_out(op, "height", g.H, g.OH, kh, sh, ph, dh);
  pool_check_out(op, "width", g.W, g.OW, kw, sw, pw, dw);
  return {{g.H, g.OH, kh, sh, ph, dh}, {g.W, g.OW, kw, sw, pw, dw}};
}

inline AvgPoolParams make_avg_pool_params(const PoolGeometry& g, int64_t kh, int64_t kw,
                                          int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                          bool count_include_pad, int64_t divisor_override,
                                          const char* op) {
  pool_check_out(op, "height", g.H, g.OH, kh, sh, ph, 1);
  pool_check_out(op, "width", g.W, g.OW, kw, sw, pw, 1);
  return {{g.H, g.OH, kh, sh, ph, false}, {g.W, g.OW, kw, sw, pw, false}, count_include_pad,
          divisor_override};
}

inline AvgPoolParams make_adaptive_params(const PoolGeometry& g, const char* op) {
  PYNN_CHECK(g.H > 0 && g.W > 0, op, ": input must have non-zero height and width, got ", g.H,
             "x", g.W);
  return {{g.H, g.OH, 0, 0, 0, true}, {g.W, g.OW, 0, 0, 0, true}, false, 0};
}

// An indices view of one dim and no elements means "store no indices". Otherwise it must match
// the output in shape, device and layout, and be int64, int32 (when every flat index fits) or
// uint8 (tap numbers, when the kernel has at most 256 taps).
inline bool pool_check_indices(const TensorView& ind, const TensorView& out,
                               const PoolGeometry& g, const MaxPoolParams& p, const char* op) {
  if (ind.dim == 1 && ind.numel() == 0) return false;
  check_dim(ind, 4, op, "indices");
  check_defined(ind, op, "indices");
  check_same_device(ind, out, op, "indices", "output");
  check_same_shape(ind, out, op, "indices", "output");
  PYNN_CHECK_TYPE(ind.dtype == DType::Int64 || ind.dtype == DType::Int32 ||
                      ind.dtype == DType::UInt8,
                  op, ": indices must be int64, int32 or uint8, got ", dtype_name(ind.dtype));
  PYNN_CHECK(ind.dtype != DType::UInt8 || p.h.kernel * p.w.kernel <= kPoolMaxTapIndex, op,
             ": uint8 indices cannot number the ", p.h.kernel * p.w.kernel, " taps of a ",
             p.h.kernel, "x", p.w.kernel, " kernel");
  PYNN_CHECK(ind.dtype == DType::Int64 || g.H * g.W <= INT32_MAX, op,
             ": int32 indices cannot address a ", g.H, "x", g.W, " plane; use int64");
  PYNN_CHECK(pool_has_layout(ind, g.layout), op, ": indices must have the layout of ",
             g.layout == PoolLayout::NCHW ? "the contiguous" : "the channels_last", " output");
  return true;
}

}  // namespace pynn
