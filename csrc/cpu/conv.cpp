// conv2d on the CPU: im2col of a tile of output positions into a slot of the caller's workspace,
// then gemm_cpu. On AVX-512, float32 layers with many channels run the blocked kernel instead
// (conv_blocked.h), and other stride-1 ones read the padded input in place (flat_conv). Work
// items are (sample, group, tile); `slots` items run side by side, each with a serial GEMM,
// which keeps every thread on its own cache-sized tile. With a single slot (one sample, or a
// pool of one) the items run in turn and the GEMM and im2col use the pool instead.
#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <type_traits>
#include <vector>

#include "core/dispatch.h"
#include "core/macros.h"
#include "core/parallel.h"
#include "cpu/conv_blocked.h"
#include "cpu/conv_depthwise.h"
#include "cpu/conv_direct.h"
#include "cpu/gemm.h"
#include "math/conv.h"
#include "ops/conv.h"

namespace pynn {
namespace {

// Rows of the column matrix per parallel chunk of im2col / col2im.
constexpr int64_t kRowGrain = 8;

struct Slots {
  int64_t count;   // workspace rows
  int64_t stride;  // elements between them
};

Slots check_workspace(const TensorView& ws, const Conv2dGeom& g, int64_t tile_cols,
                      const char* op, int64_t extra = 0) {
  check_dim(ws, 2, op, "workspace");
  check_contiguous(ws, op, "workspace");
  PYNN_CHECK(tile_cols > 0, op, ": tile_cols must be positive, got ", tile_cols);
  PYNN_CHECK(ws.sizes[0] >= 1, op, ": workspace needs at least one slot");
  if (!g.pointwise && !g.depthwise)
    PYNN_CHECK(ws.sizes[1] >= g.kcol * std::min(tile_cols, g.P) + extra, op,
               ": workspace rows hold ", ws.sizes[1], " elements, the column tile needs ",
               g.kcol * std::min(tile_cols, g.P) + extra);
  return {ws.sizes[0], ws.sizes[1]};
}

void check_dense(const TensorView& t, const char* op, const char* arg) {
  check_contiguous(t, op, arg);
  check_device(t, Device::CPU, op, arg);
}

// Runs items [0, n_items) split into `slots` contiguous ranges; f(slot, item).
template <class F>
void for_each_slot(int64_t n_items, int64_t slots, F&& f) {
  slots = std::max<int64_t>(1, std::min(slots, n_items));
  parallel_for(0, slots, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s)
      for (int64_t it = n_items * s / slots; it < n_items * (s + 1) / slots; ++it) f(s, it);
  });
}

// col[r, p - p0] = the input value that output position p (flattened oh*OW + ow) reads through
// column row r = (c, kh, kw), or 0 in the padding. The skeleton shared by both im2col variants:
// row_source(c, kw) gives, for one column row, a copy(ih, a, b, dst) that writes the values of
// output columns [a, b) of input row ih (all of them in bounds) to dst.
// Rows of col are ld apart (default p1 - p0; wider to place several samples side by side).
template <class T, class RowSource>
void im2col_rows(const Conv2dGeom& g, int64_t p0, int64_t p1, T* col, const RowSource& row_source,
                 int64_t ld = -1) {
  if (ld < 0) ld = p1 - p0;
  const int64_t kk = g.KH * g.KW;
  parallel_for(0, g.kcol, kRowGrain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = r / kk, kh = (r / g.KW) % g.KH, kw = r % g.KW;
      const auto copy = row_source(c, kw);
      int64_t lo, hi;
      conv_valid_out_range(kw, g.W, g.OW, g.sw, g.pl, g.dw, &lo, &hi);
      for (int64_t p = p0; p < p1;) {
        const int64_t oh = p / g.OW, ow0 = p - oh * g.OW;
        const int64_t ow1 = std::min(g.OW, ow0 + (p1 - p));
        T* d = col + r * ld + (p - p0);  // holds ow0 .. ow1 - 1
        const int64_t ih = conv_in_index(oh, kh, g.sh, g.pt, g.dh);
        if (ih < 0 || ih >= g.H) {
          std::fill(d, d + (ow1 - ow0), T(0));
        } else {
          const int64_t a = std::clamp(lo, ow0, ow1), b = std::clamp(hi, a, ow1);
          std::fill(d, d + (a - ow0), T(0));
          copy(ih, a, b, d + (a - ow0));
          std::fill(d + (b - ow0), d + (ow1 - ow0), T(0));
        }
        p += ow1 - ow0;
      }
    }
  });
}

// im2col reading the input directly (x is one group of one sample, [cin_g, H, W]).
template <class T>
void im2col_tile(const Conv2dGeom& g, const T* x, int64_t p0, int64_t p1, T* col,
                 int64_t ld = -1) {
  im2col_rows(g, p0, p1, col, [&](int64_t c, int64_t kw) {
    const T* src = x + c * g.HW;
    return [&g, src, kw](int64_t ih, int64_t a, int64_t b, T* dst) {
      const T* s = src + ih * g.W + conv_in_index(a, kw, g.sw, g.pl, g.dw);
      if (g.sw == 1)
        std::copy(s, s + (b - a), dst);
      else
        for (int64_t j = 0; j < b - a; ++j) dst[j] = s[j * g.sw];
    };
  }, ld);
}

// The adjoint of im2col_tile: adds col[r, p - p0] into the input position it was read from.
// Rows of one channel only touch that channel, so channels are the unit of parallel work.
template <class T>
void col2im_tile_add(const Conv2dGeom& g, const T* col, int64_t p0, int64_t p1, T* gx) {
  const int64_t ld = p1 - p0, kk = g.KH * g.KW;
  parallel_for(0, g.cin_g, std::max<int64_t>(1, kRowGrain / kk), [&](int64_t c0, int64_t c1) {
    for (int64_t r = c0 * kk; r < c1 * kk; ++r) {
      const int64_t c = r / kk, kh = (r / g.KW) % g.KH, kw = r % g.KW;
      int64_t lo, hi;
      conv_valid_out_range(kw, g.W, g.OW, g.sw, g.pl, g.dw, &lo, &hi);
      T* dst = gx + c * g.HW;
      for (int64_t p = p0; p < p1;) {
        const int64_t oh = p / g.OW, ow0 = p - oh * g.OW;
        const int64_t ow1 = std::min(g.OW, ow0 + (p1 - p));
        const int64_t ih = conv_in_index(oh, kh, g.sh, g.pt, g.dh);
        if (ih >= 0 && ih < g.H) {
          const int64_t a = std::clamp(lo, ow0, ow1), b = std::clamp(hi, a, ow1);
          const T* s = col + r * ld + (p - p0) + (a - ow0);
          T* d = dst + ih * g.W + conv_in_index(a, kw, g.sw, g.pl, g.dw);
          if (g.sw == 1)
            for (int64_t j = 0; j < b - a; ++j) d[j] += s[j];
          else
            for (int64_t j = 0; j < b - a; ++j) d[j * g.sw] += s[j];
        }
        p += ow1 - ow0;
      }
    }
  });
}

// ---- depthwise: direct loops (float32 on AVX-512 with unit stride along W: conv_depthwise.h) ----
// Output channel co reads input channel co / m (m = cout_g, the channel multiplier). Each
// kernel tap is a shifted multiply-add over whole row segments (contiguous when the stride is
// 1), which is what lets these loops vectorise.

// The row kernels are compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time,
// as the GEMM's micro-kernel is: the package itself is built for baseline x86-64.

// y[j] += a * x[j * sx] for j < n.
template <class T>
inline void row_axpy_impl(int64_t n, T a, const T* __restrict x, int64_t sx, T* __restrict y) {
  if (sx == 1)
    for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
  else
    for (int64_t j = 0; j < n; ++j) y[j] += a * x[j * sx];
}
// y[j * sy] += a * x[j] for j < n.
template <class T>
inline void row_axpy_scatter_impl(int64_t n, T a, const T* __restrict x, T* __restrict y,
                                  int64_t sy) {
  if (sy == 1)
    for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
  else
    for (int64_t j = 0; j < n; ++j) y[j * sy] += a * x[j];
}
// sum of a[j] * b[j * sb] for j < n, in lanes of independent partial sums so that the loop
// vectorises without reordering any one sum (a row is short enough for the working precision).
template <class T>
inline T row_dot_impl(int64_t n, const T* __restrict a, const T* __restrict b, int64_t sb) {
  constexpr int kLanes = 16;
  T lane[kLanes] = {};
  int64_t j = 0;
  if (sb == 1)
    for (; j + kLanes <= n; j += kLanes)
      for (int l = 0; l < kLanes; ++l) lane[l] += a[j + l] * b[j + l];
  for (; j < n; ++j) lane[0] += a[j] * b[j * sb];
  T sum = T(0);
  for (int l = 0; l < kLanes; ++l) sum += lane[l];
  return sum;
}

PYNN_CPU_MULTIVERSION void row_axpy(int64_t n, float a, const float* x, int64_t sx, float* y) {
  row_axpy_impl(n, a, x, sx, y);
}
PYNN_CPU_MULTIVERSION void row_axpy(int64_t n, double a, const double* x, int64_t sx,
                                     double* y) {
  row_axpy_impl(n, a, x, sx, y);
}
PYNN_CPU_MULTIVERSION void row_axpy_scatter(int64_t n, float a, const float* x, float* y,
                                             int64_t sy) {
  row_axpy_scatter_impl(n, a, x, y, sy);
}
PYNN_CPU_MULTIVERSION void row_axpy_scatter(int64_t n, double a, const double* x, double* y,
                                             int64_t sy) {
  row_axpy_scatter_impl(n, a, x, y, sy);
}
PYNN_CPU_MULTIVERSION float row_dot(int64_t n, const float* a, const float* b, int64_t sb) {
  return row_dot_impl(n, a, b, sb);
}
PYNN_CPU_MULTIVERSION double row_dot(int64_t n, const double* a, const double* b, int64_t sb) {
  return row_dot_impl(n, a, b, sb);
}

// Calls f(oh, ih, ow_lo, ow_hi, iw_lo) for every output row that tap (kh, kw) reads inside the
// input, with the output columns [ow_lo, ow_hi) whose input column starts at iw_lo.
template <class F>
void for_each_tap_row(const Conv2dGeom& g, int64_t kh, int64_t kw, F&& f) {
  int64_t oh_lo, oh_hi, ow_lo, ow_hi;
  conv_valid_out_range(kh, g.H, g.OH, g.sh, g.pt, g.dh, &oh_lo, &oh_hi);
  conv_valid_out_range(kw, g.W, g.OW, g.sw, g.pl, g.dw, &ow_lo, &ow_hi);
  if (ow_lo >= ow_hi) return;
  const int64_t iw_lo = conv_in_index(ow_lo, kw, g.sw, g.pl, g.dw);
  for (int64_t oh = oh_lo; oh < oh_hi; ++oh)
    f(oh, conv_in_index(oh, kh, g.sh, g.pt, g.dh), ow_lo, ow_hi, iw_lo);
}

template <class T>
void depthwise_forward(const Conv2dGeom& g, const T* x, const T* w, const T* b, T* y) {
  const int64_t kk = g.KH * g.KW;
  parallel_for(0, g.N * g.Cout, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t co = i % g.Cout, n = i / g.Cout;
      const T* xc = x + (n * g.C + co / g.cout_g) * g.HW;
      T* yc = y + i * g.P;
      std::fill(yc, yc + g.P, b ? b[co] : T(0));
      for (int64_t kh = 0; kh < g.KH; ++kh)
        for (int64_t kw = 0; kw < g.KW; ++kw) {
          const T wv = w[co * kk + kh * g.KW + kw];
          for_each_tap_row(g, kh, kw, [&](int64_t oh, int64_t ih, int64_t lo, int64_t hi,
                                          int64_t iw) {
            row_axpy(hi - lo, wv, xc + ih * g.W + iw, g.sw, yc + oh * g.OW + lo);
          });
        }
    }
  });
}

template <class T>
void depthwise_backward_input(const Conv2dGeom& g, const T* gy, const T* w, T* gx) {
  const int64_t kk = g.KH * g.KW;
  parallel_for(0, g.N * g.C, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t c = i % g.C, n = i / g.C;
      T* gxc = gx + i * g.HW;
      std::fill(gxc, gxc + g.HW, T(0));
      for (int64_t co = c * g.cout_g; co < (c + 1) * g.cout_g; ++co) {
        const T* gyc = gy + (n * g.Cout + co) * g.P;
        for (int64_t kh = 0; kh < g.KH; ++kh)
          for (int64_t kw = 0; kw < g.KW; ++kw) {
            const T wv = w[co * kk + kh * g.KW + kw];
            for_each_tap_row(g, kh, kw, [&](int64_t oh, int64_t ih, int64_t lo, int64_t hi,
                                            int64_t iw) {
              row_axpy_scatter(hi - lo, wv, gyc + oh * g.OW + lo, gxc + ih * g.W + iw, g.sw);
            });
          }
      }
    }
  });
}

// Each output channel's KH*KW weights are owned by one task, summed over the batch in double.
template <class T>
void depthwise_backward_weight(const Conv2dGeom& g, const T* gy, const T* x, T* gw) {
  using Acc = typename acc_type<T>::type;
  const int64_t kk = g.KH * g.KW;
  parallel_for(0, g.Cout, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t co = c0; co < c1; ++co)
      for (int64_t kh = 0; kh < g.KH; ++kh)
        for (int64_t kw = 0; kw < g.KW; ++kw) {
          Acc sum = 0;
          for (int64_t n = 0; n < g.N; ++n) {
            const T* gyc = gy + (n * g.Cout + co) * g.P;
            const T* xc = x + (n * g.C + co / g.cout_g) * g.HW;
            for_each_tap_row(g, kh, kw, [&](int64_t oh, int64_t ih, int64_t lo, int64_t hi,
                                            int64_t iw) {
              sum += row_dot(hi - lo, gyc + oh * g.OW + lo, xc + ih * g.W + iw, g.sw);
            });
          }
          gw[co * kk + kh * g.KW + kw] = static_cast<T>(sum);
        }
  });
}

int64_t num_tiles(const Conv2dGeom& g, int64_t tile_cols);

// ---- implicit GEMM: column panels packed straight from the input ----
// The GEMM's B operand (the column matrix of one tile of output positions) is built in the
// micro-kernel's panel layout (gemm_panels) directly from the input, so the column matrix never
// exists in row form and is copied once instead of twice (im2col, then the GEMM's own pack).
// A panel of nr output positions holds, for each column row r = (c, kh, kw), the nr input
// values those positions read through r, zero in the padding and past the tile's end.

// Where the packer reads input (c, ih, iw): base + c*cs + (ih - ih_lo)*rs + (iw mod s)*wp +
// iw div s. At stride 1 along W that is the input itself (s = 1, rs = W, cs = H*W, ih_lo = 0);
// at stride s > 1 it is a copy of the rows a tile reads with each row split into its s phases
// (columns ph, ph + s, ...), so that consecutive output positions read consecutive elements
// and a tap is a vector load again instead of a gather.
template <class T>
struct ColumnSource {
  const T* base;
  int64_t ih_lo, rs, cs, wp, s;
};

// Input rows a tile of output positions reads, and the phase copy's size (ColumnSource).
struct TileRows {
  int64_t lo, hi;
};
TileRows tile_rows(const Conv2dGeom& g, int64_t p0, int64_t cols) {
  const int64_t oh0 = p0 / g.OW, oh1 = (p0 + cols - 1) / g.OW;
  return {std::max<int64_t>(0, oh0 * g.sh - g.pt),
          std::min<int64_t>(g.H, oh1 * g.sh - g.pt + (g.KH - 1) * g.dh + 1)};
}
// At most this many input rows per tile (the tile spans at most (cols-1)/OW + 2 output rows).
int64_t max_tile_rows(const Conv2dGeom& g, int64_t tile_cols) {
  const int64_t cols = std::min(tile_cols, g.P);
  return std::min<int64_t>(g.H, ((cols - 1) / g.OW + 1) * g.sh + (g.KH - 1) * g.dh + 1);
}
int64_t phase_elems(const Conv2dGeom& g, int64_t tile_cols) {
  if (g.P == 0) return 0;
  if (g.sw == 1) return 0;
  return g.cin_g * max_tile_rows(g, tile_cols) * g.sw * ((g.W + g.sw - 1) / g.sw);
}

// Copies the input rows [rows.lo, rows.hi) of cin_g channels into scratch, each row split into
// its sw phases, and describes the copy.
template <class T>
ColumnSource<T> phase_copy(const Conv2dGeom& g, const T* x, TileRows rows, T* scratch) {
  const int64_t s = g.sw, wp = (g.W + s - 1) / s, n_rows = std::max<int64_t>(0, rows.hi - rows.lo);
  const ColumnSource<T> src{scratch, rows.lo, s * wp, n_rows * s * wp, wp, s};
  for (int64_t c = 0; c < g.cin_g; ++c)
    for (int64_t ih = rows.lo; ih < rows.hi; ++ih) {
      const T* in = x + c * g.HW + ih * g.W;
      T* out = scratch + c * src.cs + (ih - rows.lo) * src.rs;
      for (int64_t ph = 0; ph < s; ++ph)
        for (int64_t j = 0; j < wp; ++j) {
          const int64_t iw = j * s + ph;
          out[ph * wp + j] = iw < g.W ? in[iw] : T(0);
        }
    }
  return src;
}

// im2col_tile at stride > 1 along W: the strided reads become contiguous runs of a phase copy
// of the rows the tile reads (scratch: phase_elems(g, p1 - p0) elements).
template <class T>
void im2col_tile_strided(const Conv2dGeom& g, const T* x, int64_t p0, int64_t p1, T* col,
                         T* scratch) {
  const ColumnSource<T> src = phase_copy(g, x, tile_rows(g, p0, p1 - p0), scratch);
  im2col_rows(g, p0, p1, col, [&](int64_t c, int64_t kw) {
    const int64_t e = kw * g.dw - g.pl;  // iw - ow * sw
    const int64_t ediv = e >= 0 ? e / src.s : -((-e + src.s - 1) / src.s);
    const T* sc = src.base + c * src.cs + (e - ediv * src.s) * src.wp + ediv;
    return [&src, sc](int64_t ih, int64_t a, int64_t b, T* dst) {
      const T* row = sc + (ih - src.ih_lo) * src.rs;
      std::copy(row + a, row + b, dst);
    };
  });
}

#if defined(__x86_64__) && defined(__GNUC__)
#define PYNN_CONV_AVX512 1
#include <immintrin.h>
#define PYNN_TARGET_AVX512F __attribute__((target("avx512f,avx2,fma")))

// Per 16 positions of a panel: the ColumnSource index that tap (0, 0) of channel 0 reads less
// that tap's own offset (may be outside), its ih and iw, and the mask of positions inside the tile. At
// stride 1 the positions of one output row read consecutive inputs, so lane l reads
// base[s] + l for the segment s it belongs to: when the 16 positions span at most two
// segments (one output row, two, or an unpadded 1x1 whose rows are contiguous), a tap is one
// or two masked vector loads instead of a gather, which is several times slower on Zen 4.
struct Lanes16 {
  __m512i idx, ih, iw;
  __mmask16 live;
  bool segments;         // base/seg valid; otherwise gather by idx
  int32_t base[2];
  __mmask16 seg[2];
};

template <class T>
PYNN_TARGET_AVX512F PYNN_ALWAYS_INLINE Lanes16 lanes16(const Conv2dGeom& g, const ColumnSource<T>& src,
                                                       int64_t p, int64_t n) {
  alignas(64) int32_t ih[16], iw[16];
  int64_t oh = p / g.OW, ow = p - oh * g.OW;
  Lanes16 L;
  alignas(64) int32_t at[16];
  L.segments = true;
  L.base[0] = L.base[1] = 0;
  L.seg[0] = L.seg[1] = 0;
  for (int l = 0; l < 16; ++l) {
    ih[l] = static_cast<int32_t>(oh * g.sh - g.pt);
    iw[l] = static_cast<int32_t>(ow * g.sw - g.pl);
    at[l] = static_cast<int32_t>((ih[l] - src.ih_lo) * src.rs + ow);
    const int32_t d = at[l] - l;
    if (l < n) {
      if (l == 0 || d == L.base[0]) {
        L.base[0] = d;
        L.seg[0] |= __mmask16(1u << l);
      } else if (L.seg[1] == 0 || d == L.base[1]) {
        L.base[1] = d;
        L.seg[1] |= __mmask16(1u << l);
      } else {
        L.segments = false;
      }
    }
    if (++ow == g.OW) ow = 0, ++oh;
  }
  L.ih = _mm512_load_si512(ih);
  L.iw = _mm512_load_si512(iw);
  L.idx = _mm512_load_si512(at);
  L.live = n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
  return L;
}

// Mask of the positions whose tap (kh, kw) reads inside the input.
PYNN_TARGET_AVX512F PYNN_ALWAYS_INLINE __mmask16 tap_mask(const Lanes16& L, __m512i dh, __m512i dw,
                                                          __m512i H, __m512i W) {
  const __mmask16 in_h = _mm512_mask_cmplt_epu32_mask(L.live, _mm512_add_epi32(L.ih, dh), H);
  return _mm512_mask_cmplt_epu32_mask(in_h, _mm512_add_epi32(L.iw, dw), W);
}

template <class T>
PYNN_TARGET_AVX512F PYNN_ALWAYS_INLINE void load16(const Lanes16& L, __mmask16 m, const T* x,
                                                   int32_t off, T* dst) {
  if constexpr (std::is_same<T, float>::value) {
    __m512 v;
    if (L.segments) {
      v = _mm512_maskz_loadu_ps(m & L.seg[0], x + (L.base[0] + off));
      if (m & L.seg[1]) v = _mm512_mask_loadu_ps(v, m & L.seg[1], x + (L.base[1] + off));
    } else {
      v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m,
                                   _mm512_add_epi32(L.idx, _mm512_set1_epi32(off)), x, 4);
    }
    _mm512_store_ps(dst, v);
  } else {
    __m512d lo, hi;
    if (L.segments) {
      const T* s = x + (L.base[0] + off);
      const __mmask16 m0 = m & L.seg[0];
      lo = _mm512_maskz_loadu_pd(static_cast<__mmask8>(m0), s);
      hi = _mm512_maskz_loadu_pd(static_cast<__mmask8>(m0 >> 8), s + 8);
      const __mmask16 m1 = m & L.seg[1];
      if (m1) {
        s = x + (L.base[1] + off);
        lo = _mm512_mask_loadu_pd(lo, static_cast<__mmask8>(m1), s);
        hi = _mm512_mask_loadu_pd(hi, static_cast<__mmask8>(m1 >> 8), s + 8);
      }
    } else {
      const __m512i idx = _mm512_add_epi32(L.idx, _mm512_set1_epi32(off));
      lo = _mm512_mask_i32gather_pd(_mm512_setzero_pd(), static_cast<__mmask8>(m),
                                    _mm512_castsi512_si256(idx), x, 8);
      hi = _mm512_mask_i32gather_pd(_mm512_setzero_pd(), static_cast<__mmask8>(m >> 8),
                                    _mm512_extracti64x4_epi64(idx, 1), x, 8);
    }
    _mm512_store_pd(dst, lo);
    _mm512_store_pd(dst + 8, hi);
  }
}

// nr is a multiple of 16 and at most 32; input offsets fit in int32 (checked by the caller).
template <class T>
PYNN_TARGET_AVX512F void pack_columns_avx512_impl(const Conv2dGeom& g, const ColumnSource<T>& src,
                                                  int64_t p0, int64_t cols, int nr, T* Bp) {
  const int nv = nr / 16;
  const __m512i H = _mm512_set1_epi32(static_cast<int32_t>(g.H));
  const __m512i W = _mm512_set1_epi32(static_cast<int32_t>(g.W));
  for (int64_t q0 = 0; q0 < cols; q0 += nr) {
    Lanes16 L[2];
    for (int v = 0; v < nv; ++v)
      L[v] = lanes16(g, src, p0 + q0 + 16 * v, std::max<int64_t>(0, std::min<int64_t>(16, cols - q0 - 16 * v)));
    T* d = Bp + q0 * g.kcol;
    int64_t r = 0;
    for (int64_t c = 0; c < g.cin_g; ++c)
      for (int64_t kh = 0; kh < g.KH; ++kh) {
        const __m512i dh = _mm512_set1_epi32(static_cast<int32_t>(kh * g.dh));
        for (int64_t kw = 0; kw < g.KW; ++kw, ++r) {
          const __m512i dw = _mm512_set1_epi32(static_cast<int32_t>(kw * g.dw));
          const int64_t e = kw * g.dw - g.pl;  // iw - ow * s
          const int64_t ediv = e >= 0 ? e / src.s : -((-e + src.s - 1) / src.s);
          const int32_t off = static_cast<int32_t>(c * src.cs + kh * g.dh * src.rs +
                                                   (e - ediv * src.s) * src.wp + ediv);
          for (int v = 0; v < nv; ++v)
            load16(L[v], tap_mask(L[v], dh, dw, H, W), src.base, off, d + r * nr + 16 * v);
        }
      }
  }
}
PYNN_TARGET_AVX512F void pack_columns_avx512(const Conv2dGeom& g, const ColumnSource<float>& src,
                                             int64_t p0, int64_t cols, int nr, float* Bp) {
  pack_columns_avx512_impl(g, src, p0, cols, nr, Bp);
}
PYNN_TARGET_AVX512F void pack_columns_avx512(const Conv2dGeom& g,
                                             const ColumnSource<double>& src, int64_t p0,
                                             int64_t cols, int nr, double* Bp) {
  pack_columns_avx512_impl(g, src, p0, cols, nr, Bp);
}

// One register tile of the flat stride-1 convolution (flat_conv below): rows output channels
// (one A panel, [k][8], k = (c, kh, kw)) x 32 flat positions, over nci input channels. xq is
// the first channel's padded plane at the tile's first position; tap t of a position reads
// xq[c * plane + off[t]] and the 32 positions of the tile read 32 consecutive values, two
// unaligned vector loads. The tile is added to `tile` ([8][32]) or overwrites it.
template <int ROWS>
PYNN_TARGET_AVX512F void flat_tile(const float* __restrict Ap, const float* xq, int64_t plane,
                                   const int64_t* off, int taps, int64_t nci, float* tile,
                                   bool accumulate) {
  __m512 acc[ROWS][2];
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < 2; ++v)
      acc[r][v] = accumulate ? _mm512_load_ps(tile + r * 32 + 16 * v) : _mm512_setzero_ps();
  for (int64_t c = 0; c < nci; ++c, xq += plane) {
    for (int t = 0; t < taps; ++t, Ap += 8) {
      const float* p = xq + off[t];
      const __m512 b0 = _mm512_loadu_ps(p), b1 = _mm512_loadu_ps(p + 16);
      for (int r = 0; r < ROWS; ++r) {
        const __m512 a = _mm512_set1_ps(Ap[r]);
        acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
      }
    }
  }
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < 2; ++v) _mm512_store_ps(tile + r * 32 + 16 * v, acc[r][v]);
}

void flat_tile_rows(int rows, const float* Ap, const float* xq, int64_t plane, const int64_t* off,
                    int taps, int64_t nci, float* tile, bool accumulate) {
  switch (rows) {
    case 1: return flat_tile<1>(Ap, xq, plane, off, taps, nci, tile, accumulate);
    case 2: return flat_tile<2>(Ap, xq, plane, off, taps, nci, tile, accumulate);
    case 3: return flat_tile<3>(Ap, xq, plane, off, taps, nci, tile, accumulate);
    case 4: return flat_tile<4>(Ap, xq, plane, off, taps, nci, tile, accumulate);
    case 5: return flat_tile<5>(Ap, xq, plane, off, taps, nci, tile, accumulate);
    case 6: return flat_tile<6>(Ap, xq, plane, off, taps, nci, tile, accumulate);
    case 7: return flat_tile<7>(Ap, xq, plane, off, taps, nci, tile, accumulate);
    default: return flat_tile<8>(Ap, xq, plane, off, taps, nci, tile, accumulate);
  }
}

bool cpu_has_avx512f() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return has;
}
#else
#define PYNN_CONV_AVX512 0
#endif

// The same panels, one position at a time (other CPUs and panel widths).
template <class T>
void pack_columns_scalar(const Conv2dGeom& g, const T* x, int64_t p0, int64_t cols, int nr,
                         T* Bp) {
  std::vector<int64_t> ih0(nr), iw0(nr);
  for (int64_t q0 = 0; q0 < cols; q0 += nr) {
    const int n = static_cast<int>(std::min<int64_t>(nr, cols - q0));
    for (int l = 0; l < n; ++l) {
      const int64_t p = p0 + q0 + l, oh = p / g.OW, ow = p - oh * g.OW;
      ih0[l] = oh * g.sh - g.pt;
      iw0[l] = ow * g.sw - g.pl;
    }
    T* d = Bp + q0 * g.kcol;
    int64_t r = 0;
    for (int64_t c = 0; c < g.cin_g; ++c)
      for (int64_t kh = 0; kh < g.KH; ++kh)
        for (int64_t kw = 0; kw < g.KW; ++kw, ++r) {
          const T* xc = x + c * g.HW;
          T* dr = d + r * nr;
          for (int l = 0; l < n; ++l) {
            const int64_t ih = ih0[l] + kh * g.dh, iw = iw0[l] + kw * g.dw;
            dr[l] = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W ? xc[ih * g.W + iw] : T(0);
          }
          for (int l = n; l < nr; ++l) dr[l] = T(0);
        }
  }
}

// Columns [p0, p0 + cols) of one group's column matrix as gemm_panels B panels of width nr.
// `scratch` holds phase_elems(g, tile_cols) elements for the stride > 1 copy.
template <class T>
void pack_columns(const Conv2dGeom& g, const T* x, int64_t p0, int64_t cols, int nr, T* Bp,
                  T* scratch) {
#if PYNN_CONV_AVX512
  if (cpu_has_avx512f() && nr % 16 == 0 && nr <= 32) {
    ColumnSource<T> src{x, 0, g.W, g.HW, g.W, 1};
    if (g.sw > 1) src = phase_copy(g, x, tile_rows(g, p0, cols), scratch);
    const int64_t reach = (g.OH * g.sh + g.pt + g.KH * g.dh + 1) * src.rs + g.OW + g.KW * g.dw +
                          g.pl + src.s * src.wp + g.cin_g * src.cs;
    if (reach < (int64_t(1) << 31)) return pack_columns_avx512(g, src, p0, cols, nr, Bp);
  }
#endif
  pack_columns_scalar(g, x, p0, cols, nr, Bp);
}

// The GEMM's A operand for every group: group gi's A[M, K] as gemm_panels panels at
// Ap + gi * a_group. The (group, panel) pairs are split among the threads: a deep layer's
// weights are megabytes (ResNet-18's 512-channel 3x3 conv packs 2.4 M elements per call), too
// much for one thread while the others wait at the GEMM.
//   pack(gi, m0, m1, dst): rows [m0, m1) of group gi's A into dst (its panels from m0 on).
template <class F>
void pack_a_groups(GemmPanelShape shape, int64_t G, int64_t M, int64_t K, F&& pack) {
  const int64_t panels = (M + shape.mr - 1) / shape.mr;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(1, shape.mr * K));
  parallel_for(0, G * panels, grain, [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e;) {
      const int64_t gi = it / panels, p0 = it % panels, p1 = std::min(panels, p0 + (e - it));
      pack(gi, p0 * shape.mr, std::min(M, p1 * shape.mr));
      it += p1 - p0;
    }
  });
}

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Elements of one slot of the implicit GEMM's workspace: a tile's column panels, the slack
// that aligns them to 64 bytes, and at stride > 1 the phase copy of the rows the tile reads.
template <class T>
int64_t implicit_slot_elems(const Conv2dGeom& g, int64_t tile_cols, int nr) {
  return g.kcol * round_up(std::min(tile_cols, g.P), nr) + 64 / int64_t(sizeof(T)) +
         phase_elems(g, tile_cols);
}

template <class T>
Slots check_implicit_workspace(const TensorView& ws, const Conv2dGeom& g, int64_t tile_cols,
                               GemmPanelShape shape, const char* op) {
  check_dim(ws, 2, op, "workspace");
  check_contiguous(ws, op, "workspace");
  PYNN_CHECK(tile_cols > 0, op, ": tile_cols must be positive, got ", tile_cols);
  PYNN_CHECK(ws.sizes[0] >= 1, op, ": workspace needs at least one slot");
  const int64_t need = implicit_slot_elems<T>(g, tile_cols, shape.nr);
  PYNN_CHECK(ws.sizes[1] >= need, op, ": workspace rows hold ", ws.sizes[1],
             " elements, the column panels of a tile need ", need);
  return {ws.sizes[0], ws.sizes[1]};
}

template <class T>
T* check_packed_weight(const TensorView& pw, const TensorView& ref, int64_t need,
                       const char* op) {
  check_dense(pw, op, "packed_weight");
  check_same_dtype(ref, pw, op, "input", "packed_weight");
  PYNN_CHECK(pw.numel() >= need, op, ": packed_weight holds ", pw.numel(), " elements, the ",
             "weight panels need ", need);
  return pw.ptr<T>();
}

// y[n, group] = A_group @ columns(x[n, group]) (+ bias), in (sample, group, tile) items, one
// per slot at a time. Ap holds the groups' A panels, a_group elements apart.
template <class T>
void implicit_conv(const Conv2dGeom& g, GemmPanelShape shape, const T* x, const T* Ap,
                   int64_t a_group, const T* b, T* y, T* ws, Slots slots, int64_t tile_cols) {
  const int64_t nt = num_tiles(g, tile_cols);
  for_each_item_dynamic(g.N * g.G * nt, slots.count, [&](int64_t s, int64_t it) {
    const int64_t t = it % nt, gi = (it / nt) % g.G, n = it / (nt * g.G);
    const int64_t p0 = t * tile_cols, cols = std::min(g.P, p0 + tile_cols) - p0;
    T* Bp = ws + s * slots.stride;
    Bp += (64 - reinterpret_cast<uintptr_t>(Bp) % 64) % 64 / sizeof(T);
    pack_columns(g, x + (n * g.C + gi * g.cin_g) * g.HW, p0, cols, shape.nr, Bp,
                 Bp + g.kcol * round_up(std::min(tile_cols, g.P), shape.nr));
    T* yg = y + (n * g.Cout + gi * g.cout_g) * g.P + p0;
    gemm_panels<T>(shape, g.cout_g, cols, g.kcol, Ap + gi * a_group, Bp, T(0), yg, g.P);
    if (b)
      for (int64_t co = 0; co < g.cout_g; ++co) {
        const T bv = b[gi * g.cout_g + co];
        T* row = yg + co * g.P;
        for (int64_t j = 0; j < cols; ++j) row[j] += bv;
      }
  });
}

// ---- flat stride-1 convolution: the padded input as the GEMM's B operand, read in place ----
// At stride 1, output position (oh, ow) of a zero-padded input of width Wp reads tap (kh, kw) at
// flat offset (oh + kh * dh) * Wp + ow + kw * dw: consecutive flat positions q = oh * Wp + ow
// read consecutive values for every tap. So the implicit GEMM's column panels need not be
// built: the register tile takes 32 flat positions straight from a padded copy of the sample
// (flat_tile), and the packing pass, about 15% of a 64-channel 3x3 layer at 56 x 56 (perf), is
// gone. The price is the Wp - OW positions per row that fall on the padding, computed and
// dropped: 2 of 58 at 56 x 56, 2 of 16 at 14 x 14. Input channels go in blocks whose rows of
// the tile stay in L1 while all output channels pass over them; the weights (the forward's A
// panels, unchanged) stream from L2.
// Scratch (per thread, grow-only): the padded sample, cin_g x Hp x Wp floats plus one tile of
// slack, and the tile's accumulators, round_up(cout_g, 8) x 32 floats.
constexpr int64_t kFlatChannelBlock = 32;

// Whether a float32 convolution with panels `shape` runs flat_conv.
bool flat_applies(const Conv2dGeom& g, GemmPanelShape shape) {
#if PYNN_CONV_AVX512
  if (g.sh != 1 || g.sw != 1 || g.pointwise || g.depthwise) return false;
  if (shape.mr != 8 || shape.nr != 32 || !cpu_has_avx512f() || !conv2d_direct_enabled())
    return false;
  const int64_t Hp = g.OH + g.dh * (g.KH - 1), Wp = g.OW + g.dw * (g.KW - 1);
  // The input must lie inside the padded frame (an input gradient's padding is K - 1 - pad).
  if (g.pt < 0 || g.pl < 0 || Hp < g.pt + g.H || Wp < g.pl + g.W) return false;
  return 8 * g.OW >= 7 * Wp;  // at most 1 in 8 positions computed for nothing
#else
  (void)g, (void)shape;
  return false;
#endif
}

#if PYNN_CONV_AVX512
// y[n, gi] (+ bias) for every (sample, group), Ap the A panels as implicit_conv takes them.
void flat_conv(const Conv2dGeom& g, const float* x, const float* Ap, int64_t a_group,
               const float* b, float* y) {
  const int64_t Hp = g.OH + g.dh * (g.KH - 1), Wp = g.OW + g.dw * (g.KW - 1);
  const int64_t plane = Hp * Wp, Q = (g.OH - 1) * Wp + g.OW;
  const int64_t pb = Hp - g.pt - g.H;  // bottom padding (the right one lies in each row's fill)
  const int taps = static_cast<int>(g.KH * g.KW);
  std::vector<int64_t> off(static_cast<size_t>(taps));
  for (int64_t kh = 0; kh < g.KH; ++kh)
    for (int64_t kw = 0; kw < g.KW; ++kw) off[kh * g.KW + kw] = kh * g.dh * Wp + kw * g.dw;
  const int64_t panels = (g.cout_g + 7) / 8, tiles = (Q + 31) / 32;
  const int64_t pad_elems = g.cin_g * plane + 64;  // the last tile reads up to 31 past the end

  // The padded planes [c0, c1) of x[n, gi] into xp.
  auto pad = [&](int64_t n, int64_t gi, int64_t c0, int64_t c1, float* xp) {
    for (int64_t c = c0; c < c1; ++c) {
      const float* src = x + ((n * g.C + gi * g.cin_g + c) * g.H) * g.W;
      float* d = xp + c * plane;
      std::fill(d, d + g.pt * Wp, 0.0f);
      d += g.pt * Wp;
      for (int64_t h = 0; h < g.H; ++h, d += Wp, src += g.W) {
        std::fill(d, d + g.pl, 0.0f);
        std::copy(src, src + g.W, d + g.pl);
        std::fill(d + g.pl + g.W, d + Wp, 0.0f);
      }
      std::fill(d, d + pb * Wp, 0.0f);
    }
    if (c1 == g.cin_g) std::fill(xp + g.cin_g * plane, xp + pad_elems, 0.0f);
  };
  // Tiles [t0, t1) of item (n, gi) from its padded planes xp.
  auto run_tiles = [&](int64_t n, int64_t gi, const float* xp, int64_t t0, int64_t t1) {
    thread_local std::vector<float> acc_buf;
    if (acc_buf.size() < static_cast<size_t>(panels * 256 + 16))
      acc_buf.resize(static_cast<size_t>(panels * 256 + 16));
    float* acc = acc_buf.data();
    acc += (64 - reinterpret_cast<uintptr_t>(acc) % 64) % 64 / sizeof(float);  // aligned tiles
    const float* A = Ap + gi * a_group;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t q0 = t * 32;
      for (int64_t c0 = 0; c0 < g.cin_g; c0 += kFlatChannelBlock) {
        const int64_t nci = std::min(kFlatChannelBlock, g.cin_g - c0);
        for (int64_t j = 0; j < panels; ++j)
          flat_tile_rows(static_cast<int>(std::min<int64_t>(8, g.cout_g - 8 * j)),
                         A + j * 8 * g.kcol + c0 * taps * 8, xp + c0 * plane + q0, plane,
                         off.data(), taps, nci, acc + j * 256, c0 > 0);
      }
      // Lanes that fall on an output row go out, run by run.
      for (int64_t q = q0; q < std::min(Q, q0 + 32);) {
        const int64_t oh = q / Wp, ow = q - oh * Wp;
        if (ow >= g.OW) {
          q = (oh + 1) * Wp;
          continue;
        }
        const int64_t len = std::min(g.OW - ow, q0 + 32 - q);
        for (int64_t co = 0; co < g.cout_g; ++co) {
          const float bv = b ? b[gi * g.cout_g + co] : 0.0f;
          const float* a = acc + (co / 8) * 256 + (co % 8) * 32 + (q - q0);
          float* dst = y + (n * g.Cout + gi * g.cout_g + co) * g.P + oh * g.OW + ow;
          for (int64_t l = 0; l < len; ++l) dst[l] = a[l] + bv;
        }
        q += len;
      }
    }
  };
  const int64_t items = g.N * g.G;
  const int threads = in_parallel_region() ? 1 : get_num_threads();
  if (items % threads == 0 || items >= 4 * threads) {
    // Whole items per thread, each padding its own sample.
    for_each_item_dynamic(items, threads, [&](int64_t, int64_t it) {
      thread_local std::vector<float> xp;
      if (xp.size() < static_cast<size_t>(pad_elems)) xp.resize(static_cast<size_t>(pad_elems));
      const int64_t n = it / g.G, gi = it % g.G;
      pad(n, gi, 0, g.cin_g, xp.data());
      run_tiles(n, gi, xp.data(), 0, tiles);
    });
    return;
  }
  // Too few items to go round evenly: each is padded and split by tiles among the threads.
  std::vector<float> xp(static_cast<size_t>(pad_elems));
  for (int64_t it = 0; it < items; ++it) {
    const int64_t n = it / g.G, gi = it % g.G;
    parallel_for(0, g.cin_g, 8, [&](int64_t c0, int64_t c1) { pad(n, gi, c0, c1, xp.data()); });
    parallel_for(0, tiles, 4, [&](int64_t t0, int64_t t1) { run_tiles(n, gi, xp.data(), t0, t1); });
  }
}
#endif

// ---- few output positions: positions as the GEMM's rows ----
// Deep layers have few output positions per sample (ResNet's 7x7 and 14x14). The implicit GEMM
// puts positions on the 32-wide side of its register tile, so 49 of them fill 64 columns, and it
// streams all of the weights once per sample. Here the column matrix of a chunk of samples is
// built side by side ([kcol][samples * P]) and one gemm_cpu computes
//   Y^T[(n, p), co] = cols^T @ W^T
// with positions on the 8-row side (4 samples x 49 = 196 rows: 24.5 of 8) and output channels on
// the vector side, the weights packed once per chunk by the GEMM, threads split inside it; Y^T is
// then written out as NCHW. Scratch (the calling thread's, grow-only): the chunk's column matrix,
// at most max(kcol * P, 2^21) elements, and its Y^T, at most that many positions x Cout.
// Measured against the implicit GEMM (2-core Zen 4, batch 4, 3x3): 7x7 outputs 6.2 vs 7.5 ms
// (512 channels), 14x14 outputs 6.9 vs 5.6 ms (256 channels): the panels lose only below 100.
bool few_positions(const Conv2dGeom& g) {
  return g.G == 1 && !g.pointwise && !g.depthwise && g.P <= 100 && g.Cout >= 64 &&
         g.kcol >= 64;
}

// y = conv(x) (+ b) for G == 1, with wm the weights as a row-major [Cout, kcol] matrix.
template <class T>
void few_positions_conv(const Conv2dGeom& g, const T* x, const T* wm, const T* b, T* y) {
  const int64_t per_sample = g.kcol * g.P;
  const int64_t chunk = std::clamp<int64_t>((int64_t(1) << 21) / per_sample, 1, g.N);
  thread_local std::vector<T> scratch;
  const size_t need = static_cast<size_t>(chunk * g.P * (g.kcol + g.Cout));
  if (scratch.size() < need) scratch.resize(need);
  T* col = scratch.data();
  T* yt = col + chunk * per_sample;
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t ns = std::min(chunk, g.N - n0), rows = ns * g.P;
    for (int64_t j = 0; j < ns; ++j)
      im2col_tile(g, x + (n0 + j) * g.C * g.HW, 0, g.P, col + j * g.P, rows);
    gemm_cpu<T>(rows, g.Cout, g.kcol, T(1), col, 1, rows, wm, 1, g.kcol, T(0), yt, g.Cout);
    // Y^T -> y[n, co, :], 16 channels of a sample at a time so that the reads stay in a few lines
    const int64_t cb = 16, blocks = (g.Cout + cb - 1) / cb;
    parallel_for(0, ns * blocks, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t j = i / blocks, c0 = (i % blocks) * cb, c1 = std::min(g.Cout, c0 + cb);
        const T* src = yt + j * g.P * g.Cout;
        T* dst = y + (n0 + j) * g.Cout * g.P;
        for (int64_t p = 0; p < g.P; ++p)
          for (int64_t co = c0; co < c1; ++co)
            dst[co * g.P + p] = src[p * g.Cout + co] + (b ? b[co] : T(0));
      }
    });
  }
}

// An unpadded stride-1 1x1 convolution reads the input as its own column matrix and needs no
// workspace: gemm_cpu packs long runs of input rows itself. The column panels bought nothing
// here (ResNet 1x1 256->128 28x28 b8, one thread: 4.9-5.0 ms CPU time either way, main's
// 4.7-4.8 on the same code within the machine's noise).
template <class T>
void pointwise_forward(const Conv2dGeom& g, const T* x, const T* w, const T* b, T* y,
                       Slots slots, int64_t tile_cols) {
  const int64_t nt = num_tiles(g, tile_cols);
  for_each_slot(g.N * g.G * nt, slots.count, [&](int64_t, int64_t it) {
    const int64_t t = it % nt, gi = (it / nt) % g.G, n = it / (nt * g.G);
    const int64_t p0 = t * tile_cols, cols = std::min(g.P, p0 + tile_cols) - p0;
    const T* xg = x + (n * g.C + gi * g.cin_g) * g.HW + p0;
    T* yg = y + (n * g.Cout + gi * g.cout_g) * g.P + p0;
    gemm_cpu<T>(g.cout_g, cols, g.kcol, T(1), w + gi * g.cout_g * g.kcol, g.kcol, 1, xg, g.HW, 1,
                T(0), yg, g.P);
    if (b)
      for (int64_t co = 0; co < g.cout_g; ++co) {
        const T bv = b[gi * g.cout_g + co];
        T* row = yg + co * g.P;
        for (int64_t j = 0; j < cols; ++j) row[j] += bv;
      }
  });
}

int64_t num_tiles(const Conv2dGeom& g, int64_t tile_cols) {
  return g.P == 0 ? 0 : (g.P + tile_cols - 1) / tile_cols;
}

}  // namespace

bool conv2d_direct_cpu(const TensorView& input, const TensorView& weight,
                       const TensorView& output, Pair stride, Quad padding, Pair dilation,
                       int64_t groups, int64_t pass) {
  PYNN_CHECK(pass >= 0 && pass <= 2, "conv2d_direct: pass must be 0 (forward), 1 (input ",
             "gradient) or 2 (weight gradient), got ", pass);
  const Conv2dGeom g = conv2d_geom(input, weight, output, stride, padding, dilation, groups,
                                   "conv2d_direct", "input", "output");
  if (input.device != Device::CPU) return false;
  const ConvPass p = static_cast<ConvPass>(pass);
  if (conv2d_direct_applies(g, input.dtype, p)) return true;
  if (input.dtype != DType::Float32) return false;
  if (g.depthwise) return conv2d_depthwise_fast_applies(g, p);
  switch (p) {
    case ConvPass::forward:
      return conv2d_blocked_applies(g);
    case ConvPass::input_grad:
      return conv2d_blocked_input_grad_applies(g);
    default:
      return conv2d_blocked_weight_applies(g);
  }
}

void conv2d_forward_cpu(const TensorView& input, const TensorView& weight, const TensorView& bias,
                        bool has_bias, const TensorView& output, const TensorView& workspace,
                        const TensorView& packed_weight, Pair stride, Quad padding, Pair dilation,
                        int64_t groups, int64_t tile_cols) {
  const char* op = "conv2d_forward";
  const Conv2dGeom g =
      conv2d_geom(input, weight, output, stride, padding, dilation, groups, op, "input", "output");
  check_dense(input, op, "input");
  check_dense(weight, op, "weight");
  check_dense(output, op, "output");
  check_same_dtype(input, weight, op, "input", "weight");
  check_same_dtype(input, output, op, "input", "output");
  check_same_dtype(input, workspace, op, "input", "workspace");
  if (has_bias) {
    check_dense(bias, op, "bias");
    check_same_dtype(input, bias, op, "input", "bias");
    PYNN_CHECK(bias.dim == 1 && bias.sizes[0] == g.Cout, op, ": bias has shape ", bias.shape_str(),
               ", expected [", g.Cout, "]");
  }
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    const T* x = input.ptr<T>();
    const T* w = weight.ptr<T>();
    const T* b = has_bias ? bias.ptr<T>() : nullptr;
    T* y = output.ptr<T>();
    if (g.depthwise) {
      if constexpr (std::is_same<T, float>::value)
        if (conv2d_depthwise_fast_applies(g, ConvPass::forward))
          return conv2d_depthwise_forward(g, x, w, b, y);
      return depthwise_forward(g, x, w, b, y);
    }
    if constexpr (std::is_same<T, float>::value)
      if (conv2d_direct_applies(g, input.dtype, ConvPass::forward))
        return conv2d_direct_forward(g, x, w, b, y);
    if constexpr (std::is_same<T, float>::value)
      if (conv2d_blocked_applies(g)) return conv2d_blocked_forward(g, x, w, b, y);
    if (g.pointwise)
      return pointwise_forward(g, x, w, b, y, check_workspace(workspace, g, tile_cols, op),
                               tile_cols);
    if (few_positions(g)) return few_positions_conv(g, x, w, b, y);
    const GemmPanelShape shape = gemm_panel_shape<T>();
    const Slots slots = check_implicit_workspace<T>(workspace, g, tile_cols, shape, op);
    const int64_t a_group = round_up(g.cout_g, shape.mr) * g.kcol;
    T* Ap = check_packed_weight<T>(packed_weight, input, g.G * a_group, op);
    pack_a_groups(shape, g.G, g.cout_g, g.kcol, [&](int64_t gi, int64_t m0, int64_t m1) {
      gemm_pack_a_panels<T>(shape, m1 - m0, g.kcol, w + (gi * g.cout_g + m0) * g.kcol, g.kcol, 1,
                            Ap + gi * a_group + m0 * g.kcol);
    });
#if PYNN_CONV_AVX512
    if constexpr (std::is_same<T, float>::value)
      if (flat_applies(g, shape)) return flat_conv(g, x, Ap, a_group, b, y);
#endif
    implicit_conv(g, shape, x, Ap, a_group, b, y, workspace.ptr<T>(), slots, tile_cols);
  });
}

void conv2d_backward_input_cpu(const TensorView& grad_output, const TensorView& weight,
                               const TensorView& grad_input, const TensorView& workspace,
                               const TensorView& packed_weight, Pair stride, Quad padding,
                               Pair dilation, int64_t groups, int64_t tile_cols) {
  const char* op = "conv2d_backward_input";
  const Conv2dGeom g = conv2d_geom(grad_input, weight, grad_output, stride, padding, dilation,
                                   groups, op, "grad_input", "grad_output");
  check_dense(grad_output, op, "grad_output");
  check_dense(weight, op, "weight");
  check_dense(grad_input, op, "grad_input");
  check_same_dtype(grad_output, weight, op, "grad_output", "weight");
  check_same_dtype(grad_output, grad_input, op, "grad_output", "grad_input");
  check_same_dtype(grad_output, workspace, op, "grad_output", "workspace");
  dispatch_floating(grad_output.dtype, op, "grad_output", [&](auto tag) {
    using T = decltype(tag);
    const T* gy = grad_output.ptr<T>();
    const T* w = weight.ptr<T>();
    T* gx = grad_input.ptr<T>();
    if (g.depthwise) {
      if constexpr (std::is_same<T, float>::value)
        if (conv2d_depthwise_fast_applies(g, ConvPass::input_grad))
          return conv2d_depthwise_backward_input(g, gy, w, gx);
      return depthwise_backward_input(g, gy, w, gx);
    }
    if constexpr (std::is_same<T, float>::value)
      if (conv2d_direct_applies(g, grad_output.dtype, ConvPass::input_grad))
        return conv2d_direct_backward_input(g, gy, w, gx);
    if constexpr (std::is_same<T, float>::value)
      if (conv2d_blocked_input_grad_applies(g))
        return conv2d_blocked_backward_input(g, gy, w, gx);
    if (conv2d_input_grad_is_conv(stride, padding, dilation, g.KH, g.KW, g.cin_g)) {
      // At stride 1 the input gradient is itself a convolution: of grad_output, padded by
      // dil*(K-1) - pad, with the kernel flipped and its channel axes swapped per group. It
      // then runs the forward's implicit GEMM, with no column matrix or scatter.
      const Conv2dGeom t = conv2d_input_grad_phase(g, 0, 0).geom;
      const int64_t kk = g.KH * g.KW;
      if (few_positions(t)) {
        // the flipped kernel as a row-major [C, Cout * kk] matrix (the calling thread's scratch)
        thread_local std::vector<T> wf;
        if (wf.size() < static_cast<size_t>(t.Cout * t.kcol))
          wf.resize(static_cast<size_t>(t.Cout * t.kcol));
        T* f = wf.data();
        conv2d_flipped_weight(w, g.Cout, g.C, kk, f);
        return few_positions_conv(t, gy, static_cast<const T*>(f), static_cast<const T*>(nullptr),
                                  gx);
      }
      const GemmPanelShape shape = gemm_panel_shape<T>();
      const Slots slots = check_implicit_workspace<T>(workspace, t, tile_cols, shape, op);
      const int64_t a_group = round_up(t.cout_g, shape.mr) * t.kcol;
      T* Ap = check_packed_weight<T>(packed_weight, grad_output, t.G * a_group, op);
      // A[ci, co * kk + j] = w[gi * cout_g + co, ci, kk - 1 - j] ((kh, kw) -> (KH-1-kh, KW-1-kw)):
      // per panel and output channel, mr reversed runs of kk taps transposed into [j][r].
      pack_a_groups(shape, t.G, t.cout_g, t.kcol, [&](int64_t gi, int64_t m0, int64_t m1) {
        const int mr = shape.mr;
        for (int64_t i0 = m0; i0 < m1; i0 += mr) {
          const int rows = static_cast<int>(std::min<int64_t>(mr, m1 - i0));
          for (int64_t co = 0; co < g.cout_g; ++co) {
            const T* src = w + ((gi * g.cout_g + co) * g.cin_g + i0) * kk + (kk - 1);
            T* d = Ap + gi * a_group + i0 * t.kcol + co * kk * mr;
            for (int64_t j = 0; j < kk; ++j, d += mr) {
              int r = 0;
              for (; r < rows; ++r) d[r] = src[r * kk - j];
              for (; r < mr; ++r) d[r] = T(0);
            }
          }
        }
      });
#if PYNN_CONV_AVX512
      if constexpr (std::is_same<T, float>::value)
        if (flat_applies(t, shape)) return flat_conv(t, gy, Ap, a_group, nullptr, gx);
#endif
      return implicit_conv(t, shape, gy, Ap, a_group, static_cast<const T*>(nullptr), gx,
                           workspace.ptr<T>(), slots, tile_cols);
    }
    const Slots slots = check_workspace(workspace, g, tile_cols, op);
    const int64_t nt = num_tiles(g, tile_cols);
    // One item per (sample, group): the tiles of one sample overlap in grad_input (neighbouring
    // receptive fields share pixels), so one thread owns all of them.
    for_each_slot(g.N * g.G, slots.count, [&](int64_t s, int64_t it) {
      const int64_t gi = it % g.G, n = it / g.G;
      T* gxg = gx + (n * g.C + gi * g.cin_g) * g.HW;
      const T* gyg = gy + (n * g.Cout + gi * g.cout_g) * g.P;
      const T* wg = w + gi * g.cout_g * g.kcol;  // read transposed: [kcol, cout_g]
      if (g.pointwise) {
        gemm_cpu<T>(g.kcol, g.P, g.cout_g, T(1), wg, 1, g.kcol, gyg, g.P, 1, T(0), gxg, g.HW);
        return;
      }
      std::fill(gxg, gxg + g.cin_g * g.HW, T(0));
      T* col = workspace.ptr<T>() + s * slots.stride;
      for (int64_t t = 0; t < nt; ++t) {
        const int64_t p0 = t * tile_cols, p1 = std::min(g.P, p0 + tile_cols), cols = p1 - p0;
        gemm_cpu<T>(g.kcol, cols, g.cout_g, T(1), wg, 1, g.kcol, gyg + p0, g.P, 1, T(0), col,
                    cols);
        col2im_tile_add(g, col, p0, p1, gxg);
      }
    });
  });
}

void conv2d_backward_weight_cpu(const TensorView& grad_output, const TensorView& input,
                                const TensorView& grad_weight, const TensorView& workspace,
                                const TensorView& partial, Pair stride, Quad padding,
                                Pair dilation, int64_t groups, int64_t tile_cols) {
  const char* op = "conv2d_backward_weight";
  const Conv2dGeom g = conv2d_geom(input, grad_weight, grad_output, stride, padding, dilation,
                                   groups, op, "input", "grad_output");
  check_dense(grad_output, op, "grad_output");
  check_dense(input, op, "input");
  check_dense(grad_weight, op, "grad_weight");
  check_same_dtype(grad_output, input, op, "grad_output", "input");
  check_same_dtype(grad_output, grad_weight, op, "grad_output", "grad_weight");
  if (grad_output.dtype == DType::Float32 && conv2d_blocked_weight_applies(g))
    return conv2d_blocked_backward_weight(g, grad_output.ptr<float>(), input.ptr<float>(),
                                          grad_weight.ptr<float>());
  // float32: no workspace, no partial sums
  if (conv2d_direct_applies(g, grad_output.dtype, ConvPass::weight_grad))
    return conv2d_direct_backward_weight(g, grad_output.ptr<float>(), input.ptr<float>(),
                                         grad_weight.ptr<float>());
  check_same_dtype(grad_output, workspace, op, "grad_output", "workspace");
  // at stride > 1 the row after the column tile holds the phase copy (im2col_tile_strided)
  const Slots slots = check_workspace(workspace, g, tile_cols, op,
                                      g.pointwise || g.depthwise ? 0 : phase_elems(g, tile_cols));
  const int64_t nt = num_tiles(g, tile_cols);
  const int64_t n_items = g.N * g.G * nt;
  const int64_t n_slots = std::max<int64_t>(1, std::min(slots.count, n_items));
  const int64_t wnumel = grad_weight.numel();
  if (n_slots > 1 && !g.depthwise) {
    check_dense(partial, op, "partial");
    check_same_dtype(grad_output, partial, op, "grad_output", "partial");
    PYNN_CHECK(partial.numel() >= n_slots * wnumel, op, ": partial holds ", partial.numel(),
               " elements, ", n_slots, " slots of grad_weight need ", n_slots * wnumel);
  }
  dispatch_floating(grad_output.dtype, op, "grad_output", [&](auto tag) {
    using T = decltype(tag);
    const T* gy = grad_output.ptr<T>();
    const T* x = input.ptr<T>();
    T* gw = grad_weight.ptr<T>();
    if (g.depthwise) {
      if constexpr (std::is_same<T, float>::value)
        if (conv2d_depthwise_fast_applies(g, ConvPass::weight_grad))
          return conv2d_depthwise_backward_weight(g, gy, x, gw);
      return depthwise_backward_weight(g, gy, x, gw);
    }
    // Each slot sums its items into its own copy of grad_weight; one slot uses grad_weight.
    T* acc = n_slots > 1 ? partial.ptr<T>() : gw;
    std::fill(acc, acc + n_slots * wnumel, T(0));
    for_each_slot(n_items, n_slots, [&](int64_t s, int64_t it) {
      const int64_t t = it % nt, gi = (it / nt) % g.G, n = it / (nt * g.G);
      const int64_t p0 = t * tile_cols, p1 = std::min(g.P, p0 + tile_cols), cols = p1 - p0;
      const T* xg = x + (n * g.C + gi * g.cin_g) * g.HW;
      // grad_weight[g] += grad_output[n, g][:, tile] @ col^T; col^T is read with swapped strides.
      const T* bm = xg + p0;
      int64_t b_cs = g.HW;
      if (!g.pointwise) {
        T* col = workspace.ptr<T>() + s * slots.stride;
        if (g.sw > 1)
          im2col_tile_strided(g, xg, p0, p1, col, col + g.kcol * std::min(tile_cols, g.P));
        else
          im2col_tile(g, xg, p0, p1, col);
        bm = col;
        b_cs = cols;
      }
      gemm_cpu<T>(g.cout_g, g.kcol, cols, T(1), gy + (n * g.Cout + gi * g.cout_g) * g.P + p0, g.P,
                  1, bm, 1, b_cs, T(1), acc + s * wnumel + gi * g.cout_g * g.kcol, g.kcol);
    });
    if (n_slots > 1)
      parallel_for(0, wnumel, 4096, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          T v = acc[i];
          for (int64_t s = 1; s < n_slots; ++s) v += acc[s * wnumel + i];
          gw[i] = v;
        }
      });
  });
}

void conv2d_backward_bias_cpu(const TensorView& grad_output, const TensorView& grad_bias) {
  const char* op = "conv2d_backward_bias";
  check_dim(grad_output, 4, op, "grad_output");
  check_dense(grad_output, op, "grad_output");
  check_dense(grad_bias, op, "grad_bias");
  check_same_dtype(grad_output, grad_bias, op, "grad_output", "grad_bias");
  const int64_t N = grad_output.sizes[0], Cout = grad_output.sizes[1];
  const int64_t P = grad_output.sizes[2] * grad_output.sizes[3];
  PYNN_CHECK(grad_bias.dim == 1 && grad_bias.sizes[0] == Cout, op, ": grad_bias has shape ",
             grad_bias.shape_str(), ", expected [", Cout, "]");
  dispatch_floating(grad_output.dtype, op, "grad_output", [&](auto tag) {
    using T = decltype(tag);
    using Acc = typename acc_type<T>::type;
    const T* gy = grad_output.ptr<T>();
    T* gb = grad_bias.ptr<T>();
    parallel_for(0, Cout, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, N * P)),
                 [&](int64_t c0, int64_t c1) {
                   for (int64_t c = c0; c < c1; ++c) {
                     // Independent partial sums: one chain of double adds would be bound by
                     // the add latency.
                     constexpr int kLanes = 8;
                     Acc sum[kLanes] = {};
                     for (int64_t n = 0; n < N; ++n) {
                       const T* row = gy + (n * Cout + c) * P;
                       int64_t p = 0;
                       for (; p + kLanes <= P; p += kLanes)
                         for (int l = 0; l < kLanes; ++l) sum[l] += row[p + l];
                       for (; p < P; ++p) sum[0] += row[p];
                     }
                     Acc total = 0;
                     for (int l = 0; l < kLanes; ++l) total += sum[l];
                     gb[c] = static_cast<T>(total);
                   }
                 });
  });
}

namespace {
// Disagreements for one axis between conv_out_index and a brute-force inversion of
// conv_in_index, and outputs outside conv_valid_out_range.
int64_t index_mismatches(int64_t in, int64_t K, int64_t s, int64_t pad, int64_t pad_end,
                         int64_t d) {
  const int64_t out = conv_out_size(in, pad + pad_end, K, s, d);
  int64_t bad = 0;
  for (int64_t k = 0; k < K && out > 0; ++k) {
    int64_t lo, hi;
    conv_valid_out_range(k, in, out, s, pad, d, &lo, &hi);
    for (int64_t i = 0; i < in; ++i) {
      int64_t want = -1;
      for (int64_t o = 0; o < out; ++o)
        if (conv_in_index(o, k, s, pad, d) == i) want = o;
      bad += conv_out_index(i, k, s, pad, d, out) != want;
      bad += want >= 0 && (want < lo || want >= hi);
    }
  }
  return bad;
}

TensorView shape_view(std::initializer_list<int64_t> sizes) {
  TensorView v;
  v.dtype = DType::Float64;
  for (int64_t s : sizes) v.sizes[v.dim++] = s;
  int64_t st = 1;
  for (int d = v.dim - 1; d >= 0; --d) {
    v.strides[d] = st;
    st *= v.sizes[d];
  }
  return v;
}

// Max |difference| between the CUDA kernels' per-element functions and the CPU kernels on one
// convolution, in double on deterministic pseudo-random data.
double element_math_error(int64_t N, int64_t C, int64_t H, int64_t W, int64_t Cout, int64_t KH,
                          int64_t KW, Pair stride, Quad pad, Pair dil, int64_t G) {
  const int64_t OH = conv_out_size(H, pad[0] + pad[1], KH, stride[0], dil[0]);
  const int64_t OW = conv_out_size(W, pad[2] + pad[3], KW, stride[1], dil[1]);
  const Conv2dGeom g = conv2d_geom(shape_view({N, C, H, W}), shape_view({Cout, C / G, KH, KW}),
                                   shape_view({N, Cout, OH, OW}), stride, pad, dil, G,
                                   "conv2d_math_selfcheck", "input", "output");
  uint64_t state = 12345;
  auto fill = [&](std::vector<double>& v, size_t n) {
    v.resize(n);
    for (auto& e : v) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      e = static_cast<double>(state >> 11) / 9007199254740992.0 - 0.5;
    }
  };
  std::vector<double> x, w, b, gy, col, a, ref;
  fill(x, N * C * g.HW);
  fill(w, Cout * g.kcol);
  fill(b, Cout);
  fill(gy, N * Cout * g.P);
  const int64_t kk = KH * KW;
  double err = 0;
  auto diff = [&](double u, double v) { err = std::max(err, std::abs(u - v)); };
  for (int64_t n = 0; n < N; ++n) {
    const double* xn = x.data() + n * C * g.HW;
    // im2col: the CPU row loops against im2col_value, one group at a time
    a.assign(g.kcol * g.P, 0.0);
    for (int64_t gi = 0; gi < G; ++gi) {
      im2col_tile(g, xn + gi * g.cin_g * g.HW, 0, g.P, a.data());
      for (int64_t r = 0; r < g.kcol; ++r)
        for (int64_t p = 0; p < g.P; ++p)
          diff(a[r * g.P + p], im2col_value(g, xn, gi * g.kcol + r, p));
    }
    // col2im: the CPU scatter against the gather of col2im_value
    fill(col, C * kk * g.P);
    a.assign(C * g.HW, 0.0);
    for (int64_t gi = 0; gi < G; ++gi)
      col2im_tile_add(g, col.data() + gi * g.kcol * g.P, 0, g.P, a.data() + gi * g.cin_g * g.HW);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t ih = 0; ih < H; ++ih)
        for (int64_t iw = 0; iw < W; ++iw)
          diff(a[(c * H + ih) * W + iw], col2im_value(g, col.data(), c, ih, iw));
  }
  if (g.depthwise) {
    a.assign(N * Cout * g.P, 0.0);
    depthwise_forward(g, x.data(), w.data(), b.data(), a.data());
    for (int64_t i = 0; i < N * Cout * g.P; ++i)
      diff(a[i], depthwise_output(g, x.data(), w.data(), b.data(), i / (g.P * Cout),
                                  (i / g.P) % Cout, i % g.P));
    a.assign(N * C * g.HW, 0.0);
    depthwise_backward_input(g, gy.data(), w.data(), a.data());
    for (int64_t i = 0; i < N * C * g.HW; ++i)
      diff(a[i], depthwise_grad_input(g, gy.data(), w.data(), i / g.HW / C, (i / g.HW) % C,
                                      (i / W) % H, i % W));
    a.assign(Cout * kk, 0.0);
    depthwise_backward_weight(g, gy.data(), x.data(), a.data());
    for (int64_t j = 0; j < Cout * kk; ++j) {
      double sum = 0;
      for (int64_t t = 0; t < N * g.P; ++t)
        sum += depthwise_grad_weight_term<double, double>(g, gy.data(), x.data(), j / kk,
                                                          (j / KW) % KH, j % KW, t);
      diff(a[j], sum);
    }
  }
  return err;
}
}  // namespace

double conv2d_math_selfcheck_cpu() {
  // The CUDA kernels are per-element functions of math/conv.h that the CPU kernels do not call
  // (they run the same sums as row-segment loops). This compares the two where the tests run:
  // index mismatches count 1 each, kernel results add their largest difference.
  double err = 0;
  for (int64_t s = 1; s <= 4; ++s)
    for (int64_t pad = 0; pad <= 3; ++pad)
      for (int64_t d = 1; d <= 3; ++d)
        for (int64_t K = 1; K <= 4; ++K)
          for (int64_t in = 1; in <= 9; ++in)
            for (int64_t pad_end = pad; pad_end <= pad + 1; ++pad_end)
              err += static_cast<double>(index_mismatches(in, K, s, pad, pad_end, d));
  // generic with asymmetric padding, strides and dilation; groups; depthwise with a channel
  // multiplier; a kernel as large as the padded input; depthwise strided 1x1
  err += element_math_error(2, 3, 7, 6, 4, 3, 2, {1, 2}, {1, 0, 2, 1}, {1, 2}, 1);
  err += element_math_error(1, 4, 9, 8, 6, 3, 3, {2, 1}, {1, 2, 0, 1}, {2, 1}, 2);
  err += element_math_error(2, 3, 6, 7, 6, 3, 4, {1, 1}, {1, 1, 1, 2}, {1, 1}, 3);
  err += element_math_error(1, 2, 5, 5, 2, 5, 7, {3, 2}, {0, 0, 1, 1}, {1, 1}, 2);
  err += element_math_error(2, 3, 5, 4, 3, 1, 1, {2, 2}, {1, 0, 0, 1}, {1, 1}, 3);
  return err;
}

}  // namespace pynn
