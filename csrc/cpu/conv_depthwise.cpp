// Depthwise convolution kernels for AVX-512 (see conv_depthwise.h for when they run).
#include "cpu/conv_depthwise.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"
#include "cpu/gemm.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define PYNN_DEPTHWISE_X86 1
#include <immintrin.h>
#define PYNN_TARGET_AVX512F __attribute__((target("avx512f,avx2,fma")))
#else
#define PYNN_DEPTHWISE_X86 0
#endif

namespace pynn {
namespace {

// The weight gradient keeps one accumulator vector per tap.
constexpr int64_t kMaxWeightTaps = 25;  // 5 x 5

#if PYNN_DEPTHWISE_X86

// Lanes [lo, hi) of 16, clamped.
inline __mmask16 lane_range(int64_t lo, int64_t hi) {
  lo = std::clamp<int64_t>(lo, 0, 16);
  hi = std::clamp<int64_t>(hi, 0, 16);
  if (hi <= lo) return 0;
  return static_cast<__mmask16>(((1u << hi) - 1) & ~((1u << lo) - 1));
}

// For column group q of a plane correlation (16 * V output columns from q * 16 * V), tap t and
// vector v: the lanes whose output column is inside out_cols and whose input column, the output
// column + dc[t], inside [0, cols). They depend on the columns only, so a call computes them
// once for all rows and planes: masks[(q * taps + t) * V + v].
std::vector<__mmask16> column_masks(int64_t cols, int64_t out_cols, const int64_t* dc,
                                    int64_t taps, int V) {
  const int64_t groups = (out_cols + 16 * V - 1) / (16 * V);
  std::vector<__mmask16> masks(static_cast<size_t>(groups * taps * V));
  for (int64_t q = 0; q < groups; ++q)
    for (int64_t t = 0; t < taps; ++t)
      for (int v = 0; v < V; ++v) {
        const int64_t c = q * 16 * V + 16 * v, s = c + dc[t];
        masks[static_cast<size_t>((q * taps + t) * V + v)] =
            lane_range(0, out_cols - c) & lane_range(-s, cols - s);
      }
  return masks;
}

// Where each tap of a plane correlation reads, relative to the output position: input row
// o * row_step + dr[t], column ow + dc[t], times wt[t].
struct Taps {
  int64_t dr[kMaxWeightTaps * 2], dc[kMaxWeightTaps * 2];
};

// out[o, ow] = (out[o, ow] if accumulate, else init) + sum over taps t of
// wt[t] * in[o * row_step + dr[t], ow + dc[t]], the terms outside in's rows x cols left out.
// R rows x V vectors of 16 columns at a time: R * V independent accumulators, so that the taps'
// multiply-adds do not wait on each other (one chain of 9 waits 4 cycles per link).
template <int R, int V>
PYNN_TARGET_AVX512F void correlate_plane(const float* in, int64_t rows, int64_t cols,
                                         int64_t row_step, const int64_t* dr, const int64_t* dc,
                                         const float* wt, int64_t taps, float* out,
                                         int64_t out_rows, int64_t out_cols, float init,
                                         bool accumulate, const __mmask16* masks) {
  for (int64_t o0 = 0; o0 < out_rows; o0 += R) {
    const int nr = static_cast<int>(std::min<int64_t>(R, out_rows - o0));
    for (int64_t c0 = 0; c0 < out_cols; c0 += 16 * V) {
      __mmask16 live[V];
      __m512 acc[R][V];
      for (int v = 0; v < V; ++v) {
        live[v] = lane_range(0, out_cols - c0 - 16 * v);
        for (int r = 0; r < R; ++r)
          acc[r][v] = accumulate && r < nr
                          ? _mm512_maskz_loadu_ps(live[v], out + (o0 + r) * out_cols + c0 + 16 * v)
                          : _mm512_set1_ps(init);
      }
      const __mmask16* mq = masks + (c0 / (16 * V)) * taps * V;
      for (int64_t t = 0; t < taps; ++t) {
        const __m512 wv = _mm512_set1_ps(wt[t]);
        const __mmask16* m = mq + t * V;
        const float* at = in + c0 + dc[t];
        // full trip counts (rows past nr skipped inside) keep acc in registers
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const int64_t ri = (o0 + r) * row_step + dr[t];
          if (r >= nr || ri < 0 || ri >= rows) continue;
          // lanes outside m are neither read nor faulted on, wherever the address points
#pragma GCC unroll 4
          for (int v = 0; v < V; ++v)
            acc[r][v] = _mm512_fmadd_ps(
                wv, _mm512_maskz_loadu_ps(m[v], at + ri * cols + 16 * v), acc[r][v]);
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
        if (r < nr)
          for (int v = 0; v < V; ++v)
            _mm512_mask_storeu_ps(out + (o0 + r) * out_cols + c0 + 16 * v, live[v], acc[r][v]);
    }
  }
}

// A plane correlation with 8 accumulators shaped to the output rows: up to 4 vectors across,
// the rest down. Built once per call (with its column masks), run per plane.
class Correlation {
 public:
  Correlation(int64_t rows, int64_t cols, int64_t row_step, const int64_t* dr, const int64_t* dc,
              int64_t taps, int64_t out_rows, int64_t out_cols)
      : rows_(rows), cols_(cols), row_step_(row_step), dr_(dr), dc_(dc), taps_(taps),
        out_rows_(out_rows), out_cols_(out_cols),
        v_(static_cast<int>(std::clamp<int64_t>((out_cols + 15) / 16, 1, 4))),
        masks_(column_masks(cols, out_cols, dc, taps, v_)) {}

  void run(const float* in, const float* wt, float* out, float init, bool accumulate) const {
    switch (v_) {
      case 1: return run<8, 1>(in, wt, out, init, accumulate);
      case 2: return run<4, 2>(in, wt, out, init, accumulate);
      case 3: return run<2, 3>(in, wt, out, init, accumulate);
      default: return run<2, 4>(in, wt, out, init, accumulate);
    }
  }

 private:
  template <int R, int V>
  void run(const float* in, const float* wt, float* out, float init, bool accumulate) const {
    correlate_plane<R, V>(in, rows_, cols_, row_step_, dr_, dc_, wt, taps_, out, out_rows_,
                          out_cols_, init, accumulate, masks_.data());
  }

  int64_t rows_, cols_, row_step_;
  const int64_t *dr_, *dc_;
  int64_t taps_, out_rows_, out_cols_;
  int v_;
  std::vector<__mmask16> masks_;
};

// sums[t] += sum over the output rows and columns of gy[o, ow] * x[o * sh + dr[t], ow + dc[t]]
// (terms outside x left out), in float vectors per sample, reduced into double.
PYNN_TARGET_AVX512F void weight_sums(const float* gy, int64_t OH, int64_t OW, const float* x,
                                     int64_t H, int64_t W, int64_t sh, const int64_t* dr,
                                     const int64_t* dc, int64_t taps, const __mmask16* masks,
                                     double* sums) {
  __m512 acc[kMaxWeightTaps];
  for (int64_t t = 0; t < taps; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t o = 0; o < OH; ++o)
    for (int64_t c0 = 0; c0 < OW; c0 += 16) {
      const __mmask16 live = lane_range(0, OW - c0);
      const __m512 g = _mm512_maskz_loadu_ps(live, gy + o * OW + c0);
      for (int64_t t = 0; t < taps; ++t) {
        const int64_t r = o * sh + dr[t];
        if (r < 0 || r >= H) continue;
        // masks from column_masks(W, OW, dc, taps, 1)
        const __mmask16 m = masks[(c0 / 16) * taps + t];
        acc[t] = _mm512_fmadd_ps(g, _mm512_maskz_loadu_ps(m, x + r * W + c0 + dc[t]), acc[t]);
      }
    }
  for (int64_t t = 0; t < taps; ++t) sums[t] += _mm512_reduce_add_ps(acc[t]);
}

// The taps of a forward (or weight gradient) plane: input row o * sh - pt + kh * dh, column
// ow - pl + kw * dw.
void forward_taps(const Conv2dGeom& g, Taps* tp) {
  for (int64_t kh = 0; kh < g.KH; ++kh)
    for (int64_t kw = 0; kw < g.KW; ++kw) {
      tp->dr[kh * g.KW + kw] = kh * g.dh - g.pt;
      tp->dc[kh * g.KW + kw] = kw * g.dw - g.pl;
    }
}

#endif  // PYNN_DEPTHWISE_X86
}  // namespace

bool conv2d_depthwise_fast_applies(const Conv2dGeom& g, ConvPass pass) {
#if PYNN_DEPTHWISE_X86
  if (!g.depthwise || g.sw != 1 || g.KH * g.KW > 2 * kMaxWeightTaps) return false;
  if (pass == ConvPass::input_grad && g.sh != 1) return false;
  if (pass == ConvPass::weight_grad && g.KH * g.KW > kMaxWeightTaps) return false;
  return gemm_selects_avx512() && conv2d_direct_enabled();
#else
  (void)g, (void)pass;
  return false;
#endif
}

void conv2d_depthwise_forward(const Conv2dGeom& g, const float* x, const float* w, const float* b,
                              float* y) {
#if PYNN_DEPTHWISE_X86
  Taps tp;
  forward_taps(g, &tp);
  const int64_t kk = g.KH * g.KW;
  const Correlation corr(g.H, g.W, g.sh, tp.dr, tp.dc, kk, g.OH, g.OW);
  parallel_for(0, g.N * g.Cout, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t co = i % g.Cout, n = i / g.Cout;
      corr.run(x + (n * g.C + co / g.cout_g) * g.HW, w + co * kk, y + i * g.P,
               b ? b[co] : 0.0f, false);
    }
  });
#else
  (void)g, (void)x, (void)w, (void)b, (void)y;
  PYNN_CHECK(false, "conv2d_depthwise_forward: not built for this CPU");
#endif
}

void conv2d_depthwise_backward_input(const Conv2dGeom& g, const float* gy, const float* w,
                                     float* gx) {
#if PYNN_DEPTHWISE_X86
  // At stride 1, input (ih, iw) takes tap (kh, kw) from output (ih + pt - kh*dh, iw + pl - kw*dw).
  Taps tp;
  for (int64_t kh = 0; kh < g.KH; ++kh)
    for (int64_t kw = 0; kw < g.KW; ++kw) {
      tp.dr[kh * g.KW + kw] = g.pt - kh * g.dh;
      tp.dc[kh * g.KW + kw] = g.pl - kw * g.dw;
    }
  const int64_t kk = g.KH * g.KW;
  const Correlation corr(g.OH, g.OW, 1, tp.dr, tp.dc, kk, g.H, g.W);
  parallel_for(0, g.N * g.C, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t c = i % g.C, n = i / g.C;
      for (int64_t j = 0; j < g.cout_g; ++j) {  // the output channels that read channel c
        const int64_t co = c * g.cout_g + j;
        corr.run(gy + (n * g.Cout + co) * g.P, w + co * kk, gx + i * g.HW, 0.0f, j > 0);
      }
    }
  });
#else
  (void)g, (void)gy, (void)w, (void)gx;
  PYNN_CHECK(false, "conv2d_depthwise_backward_input: not built for this CPU");
#endif
}

void conv2d_depthwise_backward_weight(const Conv2dGeom& g, const float* gy, const float* x,
                                      float* gw) {
#if PYNN_DEPTHWISE_X86
  Taps tp;
  forward_taps(g, &tp);
  const int64_t kk = g.KH * g.KW;
  const std::vector<__mmask16> masks = column_masks(g.W, g.OW, tp.dc, kk, 1);
  parallel_for(0, g.Cout, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t co = c0; co < c1; ++co) {
      double sums[kMaxWeightTaps] = {};
      for (int64_t n = 0; n < g.N; ++n)
        weight_sums(gy + (n * g.Cout + co) * g.P, g.OH, g.OW,
                    x + (n * g.C + co / g.cout_g) * g.HW, g.H, g.W, g.sh, tp.dr, tp.dc, kk,
                    masks.data(), sums);
      for (int64_t t = 0; t < kk; ++t) gw[co * kk + t] = static_cast<float>(sums[t]);
    }
  });
#else
  (void)g, (void)gy, (void)x, (void)gw;
  PYNN_CHECK(false, "conv2d_depthwise_backward_weight: not built for this CPU");
#endif
}

}  // namespace pynn
