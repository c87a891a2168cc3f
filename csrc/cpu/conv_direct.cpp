// Direct convolution kernels for layers with few channels (see conv_direct.h for when they run).
//
// rows: forward and input gradient share one kernel, row_conv: for one output row and a vector of 16
// positions along it, acc[oc] += w[oc, ic, kh, kw] * in[ic, oh + kh, ow + kw : ow + kw + 16]
// over every tap, for a block of up to 8 output channels (8 accumulators, one vector load and
// 8 broadcasts per tap). The input gradient is that same correlation of grad_output, zero-padded
// by K - 1 - pad, with the kernel flipped and its channel axes swapped.
// The weight gradient keeps a block of output channels x KW taps of one (ic, kh) in registers
// and sweeps every sample and row: gw[oc, ic, kh, kw] = sum gy[n, oc, oh, :] . in[n, ic, oh + kh,
// kw : kw + OW], reduced across lanes at the end.
// channels: acc[v][r] += w[16v : 16v + 16, ic, kh, kw] * x[ic, ih(oh, kh), iw(ow0 + r, kw)] for
// NV = Cout / 16 vectors of output channels and R = 24 / NV positions of a row (24
// accumulators; NV weight loads and R broadcasts per tap); the edge columns run R rows of one
// column instead, on a zero-bordered copy of its strip.
#include "cpu/conv_direct.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/parallel.h"
#include "cpu/gemm.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define PYNN_DIRECT_X86 1
#include <immintrin.h>
#define PYNN_TARGET_AVX512F __attribute__((target("avx512f,avx2,fma")))
#else
#define PYNN_DIRECT_X86 0
#endif

namespace pynn {
namespace {
#if PYNN_DIRECT_X86

constexpr int64_t kMaxChannels = 16;
constexpr int64_t kMaxKW = 7;
constexpr int kOcBlock = 8;  // output channels per row_conv pass

// A read-prefetch of the line `ahead` floats past p: the address is formed as an integer, so a
// fetch past the end of the array (harmless to the hardware) forms no out-of-range pointer.
inline void prefetch_ahead(const float* p, int64_t ahead) {
  __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(p) +
                                                   static_cast<uintptr_t>(ahead) * sizeof(float)),
                     0, 3);
}

// Stride and dilation are 1 on this path, so the far paddings follow from the sizes.
int64_t pad_bottom(const Conv2dGeom& g) { return g.OH + g.KH - 1 - g.H - g.pt; }
int64_t pad_right(const Conv2dGeom& g) { return g.OW + g.KW - 1 - g.W - g.pl; }

// One sample's planes [C][H][W] as the kernels read them: the data itself without padding, else
// a zero-bordered copy [C][H + pt + pb][W + pl + pr] in the calling thread's scratch (at most
// 16 planes, reused from call to call).
struct Planes {
  const float* p;
  int64_t Hp, Wp;
};
Planes padded_sample(const float* src, int64_t C, int64_t H, int64_t W, int64_t pt, int64_t pb,
                     int64_t pl, int64_t pr) {
  if (pt == 0 && pb == 0 && pl == 0 && pr == 0) return {src, H, W};
  const int64_t Hp = H + pt + pb, Wp = W + pl + pr, plane = Hp * Wp;
  thread_local std::vector<float> buf;
  if (buf.size() < static_cast<size_t>(C * plane)) buf.resize(static_cast<size_t>(C * plane));
  float* d = buf.data();
  for (int64_t c = 0; c < C; ++c, d += plane) {
    const float* s = src + c * H * W;
    std::fill(d, d + pt * Wp, 0.f);
    for (int64_t ih = 0; ih < H; ++ih) {
      float* r = d + (pt + ih) * Wp;
      std::fill(r, r + pl, 0.f);
      std::copy(s + ih * W, s + (ih + 1) * W, r + pl);
      std::fill(r + pl + W, r + Wp, 0.f);
    }
    std::fill(d + (pt + H) * Wp, d + plane, 0.f);
  }
  return {buf.data(), Hp, Wp};
}

PYNN_TARGET_AVX512F inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
}

// out[oc0 + o, oh, :] = bias + sum_{ic, kh, kw} wk[oc0 + o, ic, kh, kw] * in[ic, oh + kh, kw + :]
// for o < ROWS (<= kOcBlock; a compile-time count keeps the accumulators in registers). in: IC
// planes of Hp x Wp with Wp >= OW + KW - 1.
template <int ROWS>
PYNN_TARGET_AVX512F void row_conv(const Planes& in, int64_t IC, const float* wk, int64_t KH,
                                  int64_t KW, int64_t oc0, const float* bias, float* out,
                                  int64_t OH, int64_t OW, int64_t oh) {
  const int64_t taps = IC * KH * KW;
  const float* wo = wk + oc0 * taps;
  for (int64_t ow0 = 0; ow0 < OW; ow0 += 16) {
    const __mmask16 m = first_lanes(OW - ow0);
    __m512 acc[ROWS];
    for (int o = 0; o < ROWS; ++o) acc[o] = _mm512_set1_ps(bias != nullptr ? bias[oc0 + o] : 0.f);
    for (int64_t ic = 0; ic < IC; ++ic)
      for (int64_t kh = 0; kh < KH; ++kh) {
        const float* row = in.p + (ic * in.Hp + oh + kh) * in.Wp + ow0;
        const float* wr = wo + (ic * KH + kh) * KW;
        for (int64_t kw = 0; kw < KW; ++kw) {
          const __m512 v = _mm512_maskz_loadu_ps(m, row + kw);
#pragma GCC unroll 8
          for (int o = 0; o < ROWS; ++o)
            acc[o] = _mm512_fmadd_ps(_mm512_set1_ps(wr[o * taps + kw]), v, acc[o]);
        }
      }
    for (int o = 0; o < ROWS; ++o)
      _mm512_mask_storeu_ps(out + ((oc0 + o) * OH + oh) * OW + ow0, m, acc[o]);
  }
}

// row_conv<rows> for a runtime rows in [1, kOcBlock].
template <int ROWS = 1, class... Args>
void row_conv_rows(int rows, Args... args) {
  if constexpr (ROWS < kOcBlock)
    if (rows > ROWS) return row_conv_rows<ROWS + 1>(rows, args...);
  row_conv<ROWS>(args...);
}

// All samples: out[n] = conv(in[n]) for n < N, in[n] zero-padded by (pt, pb, pl, pr). Items are
// output rows; a thread pads each sample its rows belong to once.
void conv_all(const float* in, int64_t N, int64_t IC, int64_t H, int64_t W, int64_t pt,
              int64_t pb, int64_t pl, int64_t pr, const float* wk, int64_t KH, int64_t KW,
              int64_t OC, const float* bias, float* out, int64_t OH, int64_t OW) {
  const int64_t row_cost = OC * IC * KH * KW * ((OW + 15) / 16);  // vector FMAs per row
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(1, row_cost));
  parallel_for(0, N * OH, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1;) {
      const int64_t n = i / OH, oh0 = i % OH, oh1 = std::min(OH, oh0 + (i1 - i));
      const Planes src = padded_sample(in + n * IC * H * W, IC, H, W, pt, pb, pl, pr);
      float* y = out + n * OC * OH * OW;
      for (int64_t oh = oh0; oh < oh1; ++oh)
        for (int64_t oc0 = 0; oc0 < OC; oc0 += kOcBlock)
          row_conv_rows(static_cast<int>(std::min<int64_t>(kOcBlock, OC - oc0)), src, IC, wk, KH,
                        KW, oc0, bias, y, OH, OW, oh);
      i += oh1 - oh0;
    }
  });
}

// Output channels per weight-gradient block: ROWS x KW accumulators, at most 24 of the 32
// vector registers. Every loop over them is unrolled: one index left to run time and GCC keeps
// the whole array in memory, storing it on every iteration (that ran 2-3x slower).
template <int KW>
constexpr int wgrad_rows() {
  return std::max(1, std::min(8, 24 / KW));
}

// gw[oc0 + o, ic, kh, :] for o < ROWS over every sample and output row (unpadded input).
template <int KW, int ROWS>
PYNN_TARGET_AVX512F void wgrad_block(const Conv2dGeom& g, const float* gy, const float* x,
                                     int64_t oc0, int64_t ic, int64_t kh, float* gw) {
  // the sizes as locals: the loops below then keep every accumulator in a register
  const int64_t N = g.N, C = g.C, Cout = g.Cout, H = g.H, W = g.W, OH = g.OH, OW = g.OW, P = g.P;
  __m512 acc[ROWS][KW];
#pragma GCC unroll 8
  for (int o = 0; o < ROWS; ++o)
#pragma GCC unroll 8
    for (int kw = 0; kw < KW; ++kw) acc[o][kw] = _mm512_setzero_ps();
  // One flat loop over (sample, row, 16-wide chunk): with nested loops GCC keeps the
  // accumulators in memory between iterations of the inner one.
  const int64_t chunks = (OW + 15) / 16, units = N * OH * chunks;
  const __mmask16 tail = first_lanes(OW - (chunks - 1) * 16);
  const float* gyr = gy + oc0 * P;                       // grad_output row (n, oc0, oh)
  const float* xr = x + (ic * H + kh) * W;               // input row (n, ic, oh + kh)
  int64_t c = 0, oh = 0;
  for (int64_t u = 0; u < units; ++u) {
    const __mmask16 m = c + 1 == chunks ? tail : __mmask16(0xFFFF);
    __m512 gv[ROWS];
#pragma GCC unroll 8
    for (int o = 0; o < ROWS; ++o) gv[o] = _mm512_maskz_loadu_ps(m, gyr + o * P + c * 16);
#pragma GCC unroll 8
    for (int kw = 0; kw < KW; ++kw) {
      const __m512 v = _mm512_maskz_loadu_ps(m, xr + c * 16 + kw);
#pragma GCC unroll 8
      for (int o = 0; o < ROWS; ++o) acc[o][kw] = _mm512_fmadd_ps(gv[o], v, acc[o][kw]);
    }
    if (++c == chunks) {
      c = 0;
      gyr += OW, xr += W;
      if (++oh == OH) {  // next sample
        oh = 0;
        gyr += (Cout - 1) * P;
        xr += (C * H - OH) * W;
      }
    }
  }
  // unrolled like the loop above: an index left to run time would keep acc in memory
#pragma GCC unroll 8
  for (int o = 0; o < ROWS; ++o)
#pragma GCC unroll 8
    for (int kw = 0; kw < KW; ++kw)
      gw[((oc0 + o) * C + ic) * g.KH * KW + kh * KW + kw] = _mm512_reduce_add_ps(acc[o][kw]);
}

template <int KW, int ROWS = 1>
void wgrad_block_rows(int rows, const Conv2dGeom& g, const float* gy, const float* x,
                      int64_t oc0, int64_t ic, int64_t kh, float* gw) {
  if constexpr (ROWS < wgrad_rows<KW>())
    if (rows > ROWS) return wgrad_block_rows<KW, ROWS + 1>(rows, g, gy, x, oc0, ic, kh, gw);
  wgrad_block<KW, ROWS>(g, gy, x, oc0, ic, kh, gw);
}

// Items are (output-channel block, ic, kh): each owns its gw entries, so no partial sums.
template <int KW>
void wgrad_all(const Conv2dGeom& g, const float* gy, const float* x, float* gw) {
  constexpr int COB = wgrad_rows<KW>();
  const int64_t blocks = (g.Cout + COB - 1) / COB, items = blocks * g.C * g.KH;
  parallel_for(0, items, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i % blocks, ic = (i / blocks) % g.C, kh = i / (blocks * g.C);
      const int64_t oc0 = b * COB;
      wgrad_block_rows<KW>(static_cast<int>(std::min<int64_t>(COB, g.Cout - oc0)), g, gy, x, oc0,
                           ic, kh, gw);
    }
  });
}

// ---- channels: output channels as the vector lanes ----

// acc[v][r] over the taps of positions ow0 .. ow0 + R - 1 of row oh, whose windows lie inside
// the input along W; rows kh in [kh0, kh1) are inside along H. wt: [C][KH][KW][Cout]. The
// block goes to blk[r * Cout + oc].
template <int NV, int R>
PYNN_TARGET_AVX512F void chan_block(const Conv2dGeom& g, const float* x, const float* wt,
                                    const float* bias, int64_t kh0, int64_t kh1, int64_t ih0,
                                    int64_t iw0, float* blk) {
  constexpr int64_t Cout = 16 * NV;
  const int64_t C = g.C, KH = g.KH, KW = g.KW, H = g.H, W = g.W, sw = g.sw, dh = g.dh,
                dw = g.dw;
  __m512 acc[NV][R];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const __m512 b = bias != nullptr ? _mm512_loadu_ps(bias + 16 * v) : _mm512_setzero_ps();
#pragma GCC unroll 24
    for (int r = 0; r < R; ++r) acc[v][r] = b;
  }
  for (int64_t ic = 0; ic < C; ++ic)
    for (int64_t kh = kh0; kh < kh1; ++kh) {
      const float* row = x + (ic * H + ih0 + kh * dh) * W + iw0;
      const float* wk = wt + (ic * KH + kh) * KW * Cout;
      for (int64_t kw = 0; kw < KW; ++kw, wk += Cout) {
        __m512 wv[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_ps(wk + 16 * v);
        // The weights (93 KB for AlexNet's first layer) stream through L1 once per block of R
        // positions. Fetching them 8 taps ahead cut that layer by 4.5% on a 2-core Xeon (one
        // process, 17 of 21 rounds, twice); 4, 16 and 32 taps gained 2-3%. Splitting the
        // input channels into passes whose weights fit in L1 lost 3%.
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) prefetch_ahead(wk, 16 * v + 8 * Cout);
        const float* xr = row + kw * dw;
#pragma GCC unroll 24
        for (int r = 0; r < R; ++r) {
          const __m512 xv = _mm512_set1_ps(xr[r * sw]);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) acc[v][r] = _mm512_fmadd_ps(wv[v], xv, acc[v][r]);
        }
      }
    }
#pragma GCC unroll 24
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(blk + r * Cout + 16 * v, acc[v][r]);
}

// chan_block<NV, r> for a runtime r in [1, R]: the interior positions left after whole blocks of
// a row, or the rows of an edge strip.
template <int NV, int R>
void chan_block_n(int r, const Conv2dGeom& g, const float* x, const float* wt, const float* bias,
                  int64_t kh0, int64_t kh1, int64_t ih0, int64_t iw0, float* blk) {
  if constexpr (R > 1)
    if (r < R) return chan_block_n<NV, R - 1>(r, g, x, wt, bias, kh0, kh1, ih0, iw0, blk);
  chan_block<NV, R>(g, x, wt, bias, kh0, kh1, ih0, iw0, blk);
}

// dst[c * ld + j] = src[j * sld + c] for 16 channels c and n <= 16 positions j: a 16 x 16
// transpose in registers (positions' channel vectors in, channels' runs of positions out).
PYNN_TARGET_AVX512F void transpose16(const float* src, int64_t sld, int n, float* dst,
                                     int64_t ld) {
  __m512 r[16], t[16];
  for (int j = 0; j < 16; ++j) r[j] = j < n ? _mm512_loadu_ps(src + j * sld) : _mm512_setzero_ps();
  for (int j = 0; j < 16; j += 2) {  // interleave 32-bit elements of row pairs
    t[j] = _mm512_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm512_unpackhi_ps(r[j], r[j + 1]);
  }
  for (int j = 0; j < 16; j += 4) {  // then 64-bit pairs
    const __m512d a = _mm512_castps_pd(t[j]), b = _mm512_castps_pd(t[j + 1]);
    const __m512d c = _mm512_castps_pd(t[j + 2]), d = _mm512_castps_pd(t[j + 3]);
    r[j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int j = 0; j < 4; ++j) {  // then 128-bit lanes, twice
    t[j] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0x88);
    t[j + 4] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0xDD);
    t[j + 8] = _mm512_shuffle_f32x4(r[j + 8], r[j + 12], 0x88);
    t[j + 12] = _mm512_shuffle_f32x4(r[j + 8], r[j + 12], 0xDD);
  }
  const __mmask16 m = first_lanes(n);
  for (int j = 0; j < 8; ++j) {  // row c is now channel c over the 16 positions
    _mm512_mask_storeu_ps(dst + j * ld, m, _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88));
    _mm512_mask_storeu_ps(dst + (j + 8) * ld, m, _mm512_shuffle_f32x4(t[j], t[j + 8], 0xDD));
  }
}

// A block of R output rows [oh0, oh0 + rows) at a time. Interior positions (windows inside the
// input along W) run as chan_block's blocks of R positions of one row. The columns whose
// windows cross the left or right padding run one column at a time down the block's rows: the
// column's input strip [C][Hs][Ws], zero where it lies in the padding, holds those rows' windows,
// and within it row oh's window starts one output row (sh input rows) below the last, so the
// strip's geometry `s` makes that the position stride and chan_block runs on it with all taps.
// Run one position at a time instead, the edge columns took 6.4% of AlexNet's first layer for
// 3.6% of its positions (NV weight loads per NV products). Each output row is then written once,
// whole, edges included.
template <int NV>
void chan_forward(const Conv2dGeom& g, const float* x, const float* w, const float* b, float* y) {
  constexpr int64_t Cout = 16 * NV;
  constexpr int R = 24 / NV;
  const int64_t kk = g.KH * g.KW;
  std::vector<float> wt(static_cast<size_t>(g.C * kk * Cout));  // [C][KH][KW][Cout]
  for (int64_t oc = 0; oc < Cout; ++oc)
    for (int64_t i = 0; i < g.C * kk; ++i) wt[i * Cout + oc] = w[oc * g.C * kk + i];
  // Positions ow in [lo, hi) read only inside the input along W (conv_valid_out_range's rule).
  const int64_t lo = std::min(g.OW, (g.pl + g.sw - 1) / g.sw);
  const int64_t reach = (g.KW - 1) * g.dw - g.pl;  // iw of the last tap less ow * sw
  const int64_t hi = std::max(lo, std::min(g.OW, g.W - reach > 0 ? (g.W - 1 - reach) / g.sw + 1 : 0));
  const int64_t edges = lo + (g.OW - hi);
  Conv2dGeom s = g;  // an edge column's strip for R rows
  s.H = (R - 1) * g.sh + (g.KH - 1) * g.dh + 1;
  s.W = (g.KW - 1) * g.dw + 1;
  s.sw = g.sh * s.W;
  const int64_t blocks = (g.OH + R - 1) / R;
  auto edge_column = [&](int64_t e) { return e < lo ? e : hi + (e - lo); };  // its ow
  parallel_for(0, g.N * blocks, 1, [&](int64_t i0, int64_t i1) {
    thread_local std::vector<float> blk_buf, strip_buf, edge_buf;
    blk_buf.resize(static_cast<size_t>((g.OW + R) * Cout));
    strip_buf.resize(static_cast<size_t>(g.C * s.H * s.W));
    edge_buf.resize(static_cast<size_t>(std::max<int64_t>(edges, 1) * R * Cout));
    float *blk = blk_buf.data(), *strip = strip_buf.data(), *edge = edge_buf.data();
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / blocks, oh0 = i % blocks * R;
      const int rows = static_cast<int>(std::min<int64_t>(R, g.OH - oh0));
      const float* xn = x + n * g.C * g.HW;
      const int64_t strip_ih = oh0 * g.sh - g.pt;  // the strips' first input row
      for (int64_t e = 0; e < edges; ++e) {  // edge column e -> edge[e][row][Cout]
        const int64_t iw0 = edge_column(e) * g.sw - g.pl;
        // strip columns [j0, j1) lie inside the input along W
        const int64_t j0 = std::min(s.W, std::max<int64_t>(0, -iw0));
        const int64_t j1 = std::max(j0, std::min(s.W, g.W - iw0));
        for (int64_t ic = 0; ic < g.C; ++ic)
          for (int64_t r = 0; r < s.H; ++r) {
            const int64_t ih = strip_ih + r;
            float* d = strip + (ic * s.H + r) * s.W;
            if (ih < 0 || ih >= g.H) {
              std::fill(d, d + s.W, 0.f);
              continue;
            }
            std::fill(d, d + j0, 0.f);
            std::copy(xn + (ic * g.H + ih) * g.W + iw0 + j0, xn + (ic * g.H + ih) * g.W + iw0 + j1,
                      d + j0);
            std::fill(d + j1, d + s.W, 0.f);
          }
        chan_block_n<NV, R>(rows, s, strip, wt.data(), b, 0, g.KH, 0, 0, edge + e * R * Cout);
      }
      for (int r = 0; r < rows; ++r) {
        const int64_t oh = oh0 + r;
        // rows kh whose input row is inside: ih = oh * sh - pt + kh * dh in [0, H)
        const int64_t ih0 = oh * g.sh - g.pt;
        int64_t kh0 = 0, kh1 = g.KH;
        while (kh0 < kh1 && ih0 + kh0 * g.dh < 0) ++kh0;
        while (kh1 > kh0 && ih0 + (kh1 - 1) * g.dh >= g.H) --kh1;
        float* yr = y + n * Cout * g.P + oh * g.OW;
        // Fetch the row's output lines for writing, a few channels' runs before each block
        // (addresses at most 64 bytes apart reach every line of a run): without it the
        // transposes below stalled on them, one run of OW floats per channel, and the layer ran
        // 3% slower (AlexNet's first, in one process, 19 of 21 rounds).
        const int64_t blocks_in_row = std::max<int64_t>(1, (hi - lo) / R);
        const int64_t per_block = (Cout + blocks_in_row - 1) / blocks_in_row;
        int64_t pc = 0;
        int64_t ow = lo;
        for (; ow + R <= hi; ow += R) {
          for (const int64_t pe = std::min(Cout, pc + per_block); pc < pe; ++pc)
            for (int64_t j = 0; j < g.OW + 15; j += 16)
              __builtin_prefetch(yr + pc * g.P + std::min(j, g.OW - 1), 1, 3);
          chan_block<NV, R>(g, xn, wt.data(), b, kh0, kh1, ih0, ow * g.sw - g.pl, blk + ow * Cout);
        }
        if (ow < hi)
          chan_block_n<NV, R - 1>(static_cast<int>(hi - ow), g, xn, wt.data(), b, kh0, kh1, ih0,
                                  ow * g.sw - g.pl, blk + ow * Cout);
        for (int64_t e = 0; e < edges; ++e)
          std::memcpy(blk + edge_column(e) * Cout, edge + (e * R + r) * Cout, Cout * sizeof(float));
        // [OW][Cout] -> y[n, :, oh, :], 16 positions x 16 channels at a time
        for (int64_t j0 = 0; j0 < g.OW; j0 += 16)
          for (int v = 0; v < NV; ++v)
            transpose16(blk + j0 * Cout + 16 * v, Cout,
                        static_cast<int>(std::min<int64_t>(16, g.OW - j0)), yr + 16 * v * g.P + j0,
                        g.P);
      }
    }
  });
}
bool rows_apply(const Conv2dGeom& g) {
  if (g.sh != 1 || g.sw != 1 || g.dh != 1 || g.dw != 1) return false;
  if (g.C > kMaxChannels || g.Cout > kMaxChannels || g.KW > kMaxKW) return false;
  return g.pt <= g.KH - 1 && pad_bottom(g) <= g.KH - 1 && g.pl <= g.KW - 1 &&
         pad_right(g) <= g.KW - 1;
}

bool channels_apply(const Conv2dGeom& g) {
  return g.C <= 4 && g.Cout % 16 == 0 && g.Cout <= 64;
}
#endif  // PYNN_DIRECT_X86

}  // namespace

bool conv2d_direct_enabled() {
  const char* env = std::getenv("PYNN_CONV_DIRECT");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

bool conv2d_direct_applies(const Conv2dGeom& g, DType dtype, ConvPass pass) {
#if PYNN_DIRECT_X86
  if (dtype != DType::Float32 || g.G != 1 || g.N == 0 || g.P == 0 || g.HW == 0) return false;
  const bool fits = rows_apply(g) || (pass == ConvPass::forward && channels_apply(g));
  return fits && gemm_selects_avx512() && conv2d_direct_enabled();
#else
  (void)g;
  (void)dtype;
  (void)pass;
  return false;
#endif
}

void conv2d_direct_forward(const Conv2dGeom& g, const float* x, const float* w, const float* b,
                           float* y) {
#if PYNN_DIRECT_X86
  if (channels_apply(g)) {  // every lane busy: preferred where both apply
    switch (g.Cout / 16) {
      case 1: return chan_forward<1>(g, x, w, b, y);
      case 2: return chan_forward<2>(g, x, w, b, y);
      case 3: return chan_forward<3>(g, x, w, b, y);
      default: return chan_forward<4>(g, x, w, b, y);
    }
  }
  conv_all(x, g.N, g.C, g.H, g.W, g.pt, pad_bottom(g), g.pl, pad_right(g), w, g.KH, g.KW,
           g.Cout, b, y, g.OH, g.OW);
#endif
}

void conv2d_direct_backward_input(const Conv2dGeom& g, const float* gy, const float* w,
                                  float* gx) {
#if PYNN_DIRECT_X86
  const int64_t kk = g.KH * g.KW;
  std::vector<float> wt(static_cast<size_t>(g.C * g.Cout * kk));  // [C][Cout][KH][KW], flipped
  conv2d_flipped_weight(w, g.Cout, g.C, kk, wt.data());
  conv_all(gy, g.N, g.Cout, g.OH, g.OW, g.KH - 1 - g.pt, g.KH - 1 - pad_bottom(g),
           g.KW - 1 - g.pl, g.KW - 1 - pad_right(g), wt.data(), g.KH, g.KW, g.C, nullptr, gx, g.H,
           g.W);
#endif
}

void conv2d_direct_backward_weight(const Conv2dGeom& g, const float* gy, const float* x,
                                   float* gw) {
#if PYNN_DIRECT_X86
  // The weight gradient reads the input unpadded: padded layers pad their sample copies here.
  if (g.pt != 0 || g.pl != 0 || pad_bottom(g) != 0 || pad_right(g) != 0) {
    // gw = sum over samples of the padded-input correlation: pad each sample into one buffer.
    const int64_t Hp = g.OH + g.KH - 1, Wp = g.OW + g.KW - 1;
    std::vector<float> xp(static_cast<size_t>(g.N * g.C * Hp * Wp));
    parallel_for(0, g.N, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const Planes s = padded_sample(x + n * g.C * g.HW, g.C, g.H, g.W, g.pt, pad_bottom(g),
                                       g.pl, pad_right(g));
        std::copy(s.p, s.p + g.C * Hp * Wp, xp.data() + n * g.C * Hp * Wp);
      }
    });
    Conv2dGeom u = g;
    u.H = Hp, u.W = Wp, u.HW = Hp * Wp, u.pt = u.pl = 0;
    return conv2d_direct_backward_weight(u, gy, xp.data(), gw);
  }
  switch (g.KW) {
    case 1: return wgrad_all<1>(g, gy, x, gw);
    case 2: return wgrad_all<2>(g, gy, x, gw);
    case 3: return wgrad_all<3>(g, gy, x, gw);
    case 4: return wgrad_all<4>(g, gy, x, gw);
    case 5: return wgrad_all<5>(g, gy, x, gw);
    case 6: return wgrad_all<6>(g, gy, x, gw);
    default: return wgrad_all<7>(g, gy, x, gw);
  }
#endif
}

}  // namespace pynn
