// Blocked direct convolution (see conv_blocked.h for the layout and when it runs).
#include "cpu/conv_blocked.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"
#include "cpu/aligned_buffer.h"
#include "cpu/conv_direct.h"
#include "cpu/gemm.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define PYNN_BLOCKED_X86 1
#include <immintrin.h>

#include "cpu/x86_transpose.h"
#define PYNN_TARGET_AVX512F __attribute__((target("avx512f,avx2,fma")))
// Unrolls a loop over a register tile's rows, so that its accumulators stay in registers (as
// PYNN_UNROLL_TILE in gemm.cpp).
#define PYNN_UNROLL_ROWS _Pragma("GCC unroll 8")
#else
#define PYNN_BLOCKED_X86 0
#endif

namespace pynn {
namespace {
#if PYNN_BLOCKED_X86

constexpr int64_t kCb = 16;  // input channels per block: one 64-byte line per position
constexpr int64_t kNr = 32;  // output channels per panel: two vectors
constexpr int64_t kMr = 8;   // output positions per register tile
constexpr int64_t kTile = kMr * kNr;
// Bytes of one K block of a panel (its channel blocks x taps x 16 x 32 floats), kept in L2 with
// the matching slice of xb while the tiles of an item pass over it.
constexpr int64_t kPanelBlockBytes = 160 << 10;
// Positions of the weight gradient's chunks (their gyT rows: 64 KiB).
constexpr int64_t kWeightChunk = 512;
// Output positions per sample at most for a 1x1 kernel to run here (14 x 14).
constexpr int64_t kMaxPointwisePositions = 196;
// Fewer (group, panel, channel block) items than this leave threads idle in the weight gradient.
constexpr int64_t kMinWeightItems = 8;
// Tiles of one item at most when its accumulators must outlive a K block (64 KiB of them).
constexpr int64_t kMaxItemTiles = 64;
// Output rows at least this wide are cut into tiles of their own (Plan::row_tiles).
constexpr int64_t kMinRowTile = 4;

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Where pack_panel reads weight (group gi, output channel m, input channel c, tap t) of the
// convolution it computes: w[gi * group + m * m_stride + c * c_stride + t * t_stride]. The
// forward reads the weight as it is; the stride-1 input gradient reads it flipped (t_stride -1,
// from the last tap) with the channel roles swapped. The phases of a strided input gradient,
// whose taps are not one float apart, are packed by pack_phase_block instead.
struct ConvWeightSource {
  const float* w;
  int64_t group, m_stride, c_stride, t_stride;
};

// Where the kernel writes output (n, channel m, oh, ow) of the convolution it computes:
// y[(n * Cout + m) * chan + oh * row + ow * col]. The forward writes y as it is (chan P, row OW,
// col 1); a phase of the input gradient every sh-th row and sw-th column of grad_input.
struct ConvOutput {
  float* y;
  int64_t chan, row, col;
};

// The calling thread's scratch for one call: `elems` floats, 64-byte aligned. Up to
// kKeepScratchBytes it stays allocated for the next call (grow-only, shared by the forward and
// the gradients, none of which calls another), so that a training loop does not map and fault
// in fresh pages per layer; a larger one (a large layer's copy of its input) is freed when the
// call ends instead of staying pinned to the thread.
constexpr size_t kKeepScratchBytes = size_t(64) << 20;

class CallScratch {
 public:
  explicit CallScratch(int64_t elems)
      : data_(buffer().get<float>(static_cast<size_t>(std::max<int64_t>(elems, 1)))) {}
  ~CallScratch() {
    if (buffer().bytes() > kKeepScratchBytes) buffer().release();
  }
  CallScratch(const CallScratch&) = delete;
  CallScratch& operator=(const CallScratch&) = delete;
  float* data() const { return data_; }

 private:
  static cpu::AlignedBuffer& buffer() {
    thread_local cpu::AlignedBuffer b;
    return b;
  }
  float* data_;
};

struct Plan {
  int64_t Hp, Wp, taps;
  int64_t cblocks, panels;
  int64_t sample;    // floats of one sample of one channel block of xb: Hp * Wp * 16
  int64_t cb_stride; // between channel blocks: N * sample
  int64_t x_group;   // between groups of xb
  int64_t w_cb;      // floats of one channel block of a panel: taps * 16 * 32
  int64_t positions;  // per group: N * OH * OW
  int64_t row_tiles;  // tiles per output row, or 0 when tiles are 8 consecutive positions
  int64_t tiles;      // per group
};

Plan make_plan(const Conv2dGeom& g) {
  Plan p;
  p.Hp = (g.OH - 1) * g.sh + (g.KH - 1) * g.dh + 1;
  p.Wp = (g.OW - 1) * g.sw + (g.KW - 1) * g.dw + 1;
  p.taps = g.KH * g.KW;
  p.cblocks = (g.cin_g + kCb - 1) / kCb;
  p.panels = (g.cout_g + kNr - 1) / kNr;
  p.sample = p.Hp * p.Wp * kCb;
  p.cb_stride = g.N * p.sample;
  p.x_group = p.cblocks * p.cb_stride;
  p.w_cb = p.taps * kCb * kNr;
  p.positions = g.N * g.P;
  // Tiles within one output row share its kernel rows in the padding, and their ends are the
  // row's, so a tile's positions read the left and right padding as contiguous runs of rows
  // (see TapClasses). Rows narrower than kMinRowTile go 8 positions to a tile instead, across
  // rows and samples: tiles of 1-3 rows would leave the register tile mostly idle.
  p.row_tiles = g.OW >= kMinRowTile ? (g.OW + kMr - 1) / kMr : 0;
  p.tiles = p.row_tiles > 0 ? g.N * g.OH * p.row_tiles : (p.positions + kMr - 1) / kMr;
  return p;
}

// For each kernel row kh, the output rows [oh[2 kh], oh[2 kh + 1]) whose tap row kh reads
// inside the input (conv_valid_out_range); likewise ow for the kernel columns. The positions
// outside read the zero padding.
struct TapRanges {
  std::vector<int64_t> oh, ow;
  explicit TapRanges(const Conv2dGeom& g)
      : oh(static_cast<size_t>(2 * g.KH)), ow(static_cast<size_t>(2 * g.KW)) {
    for (int64_t kh = 0; kh < g.KH; ++kh)
      conv_valid_out_range(kh, g.H, g.OH, g.sh, g.pt, g.dh, &oh[2 * kh], &oh[2 * kh + 1]);
    for (int64_t kw = 0; kw < g.KW; ++kw)
      conv_valid_out_range(kw, g.W, g.OW, g.sw, g.pl, g.dw, &ow[2 * kw], &ow[2 * kw + 1]);
  }
};

// Where the tiles of one output row start: a row of OW positions splits into row_tiles tiles of
// as even widths as possible (14 -> 7 + 7), tile s covering [start[s], start[s + 1]).
std::vector<int64_t> row_tile_starts(const Conv2dGeom& g, const Plan& p) {
  std::vector<int64_t> start(static_cast<size_t>(p.row_tiles + 1));
  const int64_t tiles = std::max<int64_t>(p.row_tiles, 1);
  for (int64_t s = 0; s <= p.row_tiles; ++s) start[s] = g.OW * s / tiles;
  return start;
}

// One padded row of xb: d[wp][16] = channel c of input row s (channels HW apart) at column
// wp - pl, zero outside the row and for c >= cn. 8 columns at a time go through two 8 x 8
// transposes (channels 0-7 and 8-15).
PYNN_TARGET_AVX512F void pack_row(const float* s, int64_t HW, int64_t cn, int64_t W, int64_t pl,
                                  int64_t Wp, float* d) {
  const int64_t lo = std::min(pl, Wp), hi = std::min(pl + W, Wp);  // columns holding input
  std::fill(d, d + lo * kCb, 0.0f);
  std::fill(d + hi * kCb, d + Wp * kCb, 0.0f);
  int64_t wp = lo;
  const int lo_rows = static_cast<int>(std::min<int64_t>(cn, 8));
  const int hi_rows = static_cast<int>(std::max<int64_t>(cn - 8, 0));
  for (; wp + 8 <= hi; wp += 8) {
    transpose8_block(s + (wp - pl), HW, lo_rows, d + wp * kCb, kCb, 8);
    transpose8_block(s + 8 * HW + (wp - pl), HW, hi_rows, d + wp * kCb + 8, kCb, 8);
  }
  for (; wp < hi; ++wp)
    for (int64_t c = 0; c < kCb; ++c) d[wp * kCb + c] = c < cn ? s[c * HW + (wp - pl)] : 0.0f;
}

// xb: every group's input in 16-channel blocks, zero in the padding and past the last channel.
void pack_input(const Conv2dGeom& g, const Plan& p, const float* x, float* xb) {
  const int64_t rows = g.G * p.cblocks * g.N * p.Hp;
  parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t hp = r % p.Hp, n = (r / p.Hp) % g.N, cb = (r / (p.Hp * g.N)) % p.cblocks;
      const int64_t gi = r / (p.Hp * g.N * p.cblocks);
      float* d = xb + gi * p.x_group + cb * p.cb_stride + n * p.sample + hp * p.Wp * kCb;
      const int64_t ih = hp - g.pt;
      if (ih < 0 || ih >= g.H) {
        std::fill(d, d + p.Wp * kCb, 0.0f);
        continue;
      }
      pack_row(x + ((n * g.C + gi * g.cin_g + cb * kCb) * g.H + ih) * g.W, g.HW,
               std::min(kCb, g.cin_g - cb * kCb), g.W, g.pl, p.Wp, d);
    }
  });
}

// The panels: [group][panel][cb][tap][16][32], output channels innermost, zero past the ends.
// For one input channel c of a block, its taps x 32 output channels are a transpose of the
// source's mn x taps block (rows m_stride apart, taps t_stride = +-1 apart), done as 8 x 8
// register transposes; d is the channel's row of tap 0, the next tap's row kCb * kNr further.
PYNN_TARGET_AVX512F void pack_channel(const ConvWeightSource& w, const float* s, int64_t mn,
                                      int64_t taps, float* d) {
  constexpr int64_t dt = kCb * kNr;
  const __m256i reverse = _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0);
  for (int64_t m8 = 0; m8 < kNr; m8 += 8) {
    const int64_t rows = std::clamp<int64_t>(mn - m8, 0, 8);
    const float* sm = s + m8 * w.m_stride;
    int64_t t8 = 0;
    for (; t8 + 8 <= taps; t8 += 8) {
      __m256 v[8];
      for (int r = 0; r < 8; ++r) {
        if (r >= rows) {
          v[r] = _mm256_setzero_ps();
        } else if (w.t_stride == 1) {
          v[r] = _mm256_loadu_ps(sm + r * w.m_stride + t8);
        } else {  // taps t8 .. t8 + 7 lie at -t8 - 7 .. -t8, back to front
          v[r] = _mm256_permutevar8x32_ps(_mm256_loadu_ps(sm + r * w.m_stride - t8 - 7), reverse);
        }
      }
      transpose8(v);
      for (int k = 0; k < 8; ++k) _mm256_store_ps(d + (t8 + k) * dt + m8, v[k]);
    }
    for (; t8 < taps; ++t8)
      for (int64_t r = 0; r < 8; ++r)
        d[t8 * dt + m8 + r] = r < rows ? sm[r * w.m_stride + t8 * w.t_stride] : 0.0f;
  }
}

// One channel block of a panel whose source runs along the input channels (c_stride 1: the
// forward of a 1x1 kernel): per tap, 8 x 8 transposes of 8 output channels x 8 input channels.
PYNN_TARGET_AVX512F void pack_block_by_channel(const ConvWeightSource& w, const float* s,
                                               int64_t mn, int64_t cn, int64_t taps, float* d) {
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t m8 = 0; m8 < kNr; m8 += 8) {
      const int64_t rows = std::clamp<int64_t>(mn - m8, 0, 8);
      const float* sm = s + m8 * w.m_stride + t * w.t_stride;
      for (int64_t c8 = 0; c8 < kCb; c8 += 8) {
        float* dc = d + (t * kCb + c8) * kNr + m8;
        if (c8 + 8 <= cn) {
          transpose8_block(sm + c8, w.m_stride, static_cast<int>(rows), dc, kNr, 8);
        } else {
          for (int64_t k = 0; k < 8; ++k)
            for (int64_t r = 0; r < 8; ++r)
              dc[k * kNr + r] = r < rows && c8 + k < cn ? sm[r * w.m_stride + c8 + k] : 0.0f;
        }
      }
    }
}

// Channel blocks [cb0, cb0 + ncb) of panel j of group gi into d. The source's unit stride
// picks the copy: along the output channels (an input gradient's 1x1) rows copy as they are;
// along the input channels (a forward 1x1) or the taps (the rest; fewer than 8 taps go one by
// one in pack_channel's tail) they are transposed.
void pack_panel(const Conv2dGeom& g, const Plan& p, const ConvWeightSource& w, int64_t gi,
                int64_t j, int64_t cb0, int64_t ncb, float* d) {
  const int64_t m0 = j * kNr, mn = std::min(kNr, g.cout_g - m0);
  for (int64_t cb = cb0; cb < cb0 + ncb; ++cb, d += p.w_cb) {
    const int64_t c0 = cb * kCb, cn = std::min(kCb, g.cin_g - c0);
    const float* s = w.w + gi * w.group + m0 * w.m_stride + c0 * w.c_stride;
    if (w.m_stride == 1) {
      for (int64_t t = 0; t < p.taps; ++t)
        for (int64_t c = 0; c < kCb; ++c) {
          float* dr = d + (t * kCb + c) * kNr;
          if (c < cn) std::copy_n(s + c * w.c_stride + t * w.t_stride, mn, dr);
          std::fill(dr + (c < cn ? mn : 0), dr + kNr, 0.0f);
        }
    } else if (w.c_stride == 1) {
      pack_block_by_channel(w, s, mn, cn, p.taps, d);
    } else {
      for (int64_t c = 0; c < kCb; ++c) {
        if (c < cn) {
          pack_channel(w, s + c * w.c_stride, mn, p.taps, d + c * kNr);
        } else {
          for (int64_t t = 0; t < p.taps; ++t) std::fill_n(d + (t * kCb + c) * kNr, kNr, 0.0f);
        }
      }
    }
  }
}

// One register tile of R positions: out[R][32] (+)= sum over ncb channel blocks, the taps in
// tap[0, ntaps) and 16 channels of the source (row r, tap, channel) * panel(tap, channel, 32
// output channels). Row r's value of tap t and channel c of the first channel block is at
// src[rows[r] + toff[t] + c * c_stride] (c_stride 1 in xb), the next block cb_stride further.
// The panel slice B is [cb][tap][16][32] (w_cb floats per channel block).
// kAllTaps: the taps are all of them in order (tap[i] = i, ntaps of them), and the panel is
// read straight through, as most tiles do; the interior tiles of a 56 x 56 layer ran 3% slower
// through the tap list.
// kStep > 0: the rows are positions of the input itself kStep floats apart along a row
// (rows[r] = rows[0] + r * kStep), read in place: R broadcasts at fixed offsets from one
// pointer per channel (when: see conv2d_blocked). kStep 0: rows[r] are lines of xb.
template <int R, bool kAllTaps, int kStep>
PYNN_TARGET_AVX512F void blocked_tile(const float* src, const int64_t* rows, const int64_t* toff,
                                      const int* tap, int ntaps, int64_t ncb, int64_t cb_stride,
                                      int64_t c_stride, int64_t w_cb, const float* B, float* out,
                                      bool accumulate) {
  constexpr bool kDirect = kStep > 0;
  __m512 acc[R][2];
  PYNN_UNROLL_ROWS
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < 2; ++v)
      acc[r][v] = accumulate ? _mm512_load_ps(out + r * kNr + 16 * v) : _mm512_setzero_ps();
  for (int64_t cb = 0; cb < ncb; ++cb) {
    for (int i = 0; i < ntaps; ++i) {
      const int t = kAllTaps ? i : tap[i];
      const float* a[R];
      PYNN_UNROLL_ROWS
      for (int r = 0; r < R; ++r) a[r] = src + (rows[kDirect ? 0 : r] + cb * cb_stride + toff[t]);
      const float* Bt = kAllTaps ? B : B + cb * w_cb + t * (kCb * kNr);
      const float* ac = a[0];  // in place: channel c's run of R positions
#pragma GCC unroll 16
      for (int c = 0; c < kCb; ++c, Bt += kNr) {
        const __m512 b0 = _mm512_load_ps(Bt), b1 = _mm512_load_ps(Bt + 16);
        PYNN_UNROLL_ROWS
        for (int r = 0; r < R; ++r) {
          const __m512 av = _mm512_set1_ps(kDirect ? ac[r * kStep] : a[r][c]);
          acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
          acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
        }
        if (kDirect) {
          // One add per channel and the broadcasts at fixed offsets from it. Left to itself, GCC
          // 12 keeps the 16 x R addresses of the unrolled loop on the stack and loads one per
          // broadcast: the 8-row tile ran 12% slower than on the copy.
          ac += c_stride;
          __asm__("" : "+r"(ac));
        }
      }
      if (kAllTaps) B += kCb * kNr;
    }
  }
  PYNN_UNROLL_ROWS
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < 2; ++v) _mm512_store_ps(out + r * kNr + 16 * v, acc[r][v]);
}

using BlockedTileFn = void (*)(const float*, const int64_t*, const int64_t*, const int*, int,
                               int64_t, int64_t, int64_t, int64_t, const float*, float*, bool);

// Horizontal strides whose convolutions read the input in place (kStep of blocked_tile).
constexpr int64_t kMaxDirectStride = 2;

// blocked_tile<R, all taps?, step> for R = 1 .. kMr, indexed [step][all taps?][R].
template <bool kAllTaps, int kStep, size_t... R>
constexpr std::array<BlockedTileFn, kMr + 1> blocked_tiles(std::index_sequence<R...>) {
  return {nullptr, blocked_tile<static_cast<int>(R) + 1, kAllTaps, kStep>...};
}
constexpr std::array<BlockedTileFn, kMr + 1> kBlockedTiles[kMaxDirectStride + 1][2] = {
    {blocked_tiles<false, 0>(std::make_index_sequence<kMr>()),
     blocked_tiles<true, 0>(std::make_index_sequence<kMr>())},
    {blocked_tiles<false, 1>(std::make_index_sequence<kMr>()),
     blocked_tiles<true, 1>(std::make_index_sequence<kMr>())},
    {blocked_tiles<false, 2>(std::make_index_sequence<kMr>()),
     blocked_tiles<true, 2>(std::make_index_sequence<kMr>())}};

// The taps of a tile grouped by the rows that read them inside the input. Tap (kh, kw) is read
// in the input by the positions whose oh lies in kernel row kh's range and whose ow lies in
// kernel column kw's (conv_valid_out_range); the others read the zero padding. A class holds
// the taps whose positions inside run from row lo to row hi - 1, and is summed over rows
// [lo, hi) only: the products with the padding at a tile's edges are skipped (a 3x3, pad-1
// layer at 7 x 7 positions has 18% of its products in the padding, at 14 x 14 9%). Rows in
// [lo, hi) that still read padding (where a tile spans output rows) read zeros from xb.
//
// With row tiles, a tile's classes depend only on which kernel rows its output row reaches inside
// the input and on its place s in the row, so they are grouped once per call for each such
// pair, the tile's pattern (a few kinds of rows, times the tiles of a row); tiles of 8
// positions across rows (narrow outputs) have a pattern each, grouped as the tile comes up.
class TapClasses {
 public:
  struct Class {
    int lo, hi;    // rows
    int first, n;  // taps: tap_[first, first + n)
  };

  TapClasses(const Conv2dGeom& g, const Plan& p)
      : g_(g), taps_(p.taps), ranges_(g), code_(static_cast<size_t>(p.taps)), pattern_{0} {}

  // Appends the pattern of a tile whose rows r < `rows` sit at output (oh[r], ow[r]).
  void add(const int64_t* oh, const int64_t* ow, int rows) {
    // code_[t]: tap t's rows as lo * 16 + hi, or -1 where no row reads it inside the input
    int64_t t = 0;
    for (int64_t kh = 0; kh < g_.KH; ++kh) {
      const unsigned mh = row_mask(ranges_.oh.data() + 2 * kh, oh, rows);
      for (int64_t kw = 0; kw < g_.KW; ++kw, ++t) {
        const unsigned m = mh ? mh & row_mask(ranges_.ow.data() + 2 * kw, ow, rows) : 0;
        code_[t] = m == 0 ? -1 : __builtin_ctz(m) * 16 + (32 - __builtin_clz(m));
      }
    }
    // classes in the order of their first tap, each with its taps in order
    for (t = 0; t < taps_; ++t) {
      const int c = code_[t];
      if (c < 0) continue;
      Class k{c / 16, c % 16, static_cast<int>(tap_.size()), 0};
      for (int64_t u = t; u < taps_; ++u)
        if (code_[u] == c) {
          tap_.push_back(static_cast<int>(u));
          code_[u] = -1;
        }
      k.n = static_cast<int>(tap_.size()) - k.first;
      cls_.push_back(k);
    }
    // except that a class over every row goes first: it can start the sums in registers
    const auto first = cls_.begin() + pattern_.back();
    const auto full = std::find_if(first, cls_.end(),
                                   [&](const Class& k) { return k.lo == 0 && k.hi == rows; });
    if (full != cls_.end()) std::rotate(first, full, full + 1);
    pattern_.push_back(static_cast<int>(cls_.size()));
  }

  void clear() {
    cls_.clear();
    tap_.clear();
    pattern_.resize(1);
  }

  const TapRanges& ranges() const { return ranges_; }

  // Pattern i's classes are [begin(i), end(i)).
  const Class* begin(int64_t i) const { return cls_.data() + pattern_[i]; }
  const Class* end(int64_t i) const { return cls_.data() + pattern_[i + 1]; }
  const int* taps(const Class& k) const { return tap_.data() + k.first; }

 private:
  // Rows whose output index o[r] lies in [range[0], range[1]), as bits.
  static unsigned row_mask(const int64_t* range, const int64_t* o, int rows) {
    unsigned m = 0;
    for (int r = 0; r < rows; ++r)
      if (o[r] >= range[0] && o[r] < range[1]) m |= 1u << r;
    return m;
  }

  const Conv2dGeom& g_;
  int64_t taps_;
  TapRanges ranges_;
  std::vector<int> code_, tap_;
  std::vector<Class> cls_;
  std::vector<int> pattern_;  // pattern i's classes start at cls_[pattern_[i]]
};

// Writes a finished tile out[rows][32] (rows: positions, columns: the panel's output channels)
// to y, adding the bias. y_at[r] is where position r's value of the panel's first channel goes;
// channel m is `chan` further per m. When the positions are consecutive in y, or `step` = 2
// apart (a phase of a stride-2 input gradient), 8 x 8 blocks are transposed in registers and
// stored as runs of `rows` floats, or spread to every other float of a masked store.
PYNN_TARGET_AVX512F void write_tile(const float* out, const int64_t* y_at, int rows, int cols,
                                    int64_t chan, int64_t step, const float* bias, float* y) {
  if ((step == 1 || step == 2) && y_at[rows - 1] - y_at[0] == (rows - 1) * step) {
    float* base = y + y_at[0];
    __mmask16 keep = 0;
    for (int r = 0; r < rows; ++r) keep |= static_cast<__mmask16>(1u << (r * step));
    for (int m0 = 0; m0 < cols; m0 += 8) {
      __m256 v[8];
      for (int r = 0; r < 8; ++r)
        v[r] = r < rows ? _mm256_load_ps(out + r * kNr + m0) : _mm256_setzero_ps();
      transpose8(v);
      for (int m = 0; m < std::min(8, cols - m0); ++m) {
        const __m256 bv = _mm256_set1_ps(bias ? bias[m0 + m] : 0.0f);
        const __m256 o = _mm256_add_ps(v[m], bv);
        float* d = base + (m0 + m) * chan;
        if (step == 2) {  // lane r to float 2r
          _mm512_mask_storeu_ps(d, keep, _mm512_maskz_expand_ps(0x5555, _mm512_castps256_ps512(o)));
        } else if (rows == kMr) {
          _mm256_storeu_ps(d, o);
        } else {
          _mm512_mask_storeu_ps(d, keep, _mm512_castps256_ps512(o));
        }
      }
    }
    return;
  }
  for (int m = 0; m < cols; ++m) {
    const float bv = bias ? bias[m] : 0.0f;
    for (int r = 0; r < rows; ++r) y[y_at[r] + m * chan] = out[r * kNr + m] + bv;
  }
}

// ---- weight gradient ----
// gw[m, c, t] = sum over positions q of gy[m, q] * x(q, tap t, channel c): the register tile
// holds 8 channels of one tap x 32 output channels and runs the whole batch's positions, each
// two vector loads of gyT (grad_output transposed, [panel][positions][32]) and 8 broadcasts
// from the input's 8 channel planes (or one line of xb).

// gyT[gi][j][n * P + q][m - 32 j] = gy[n, gi * cout_g + m, q], m in panel j, zero for
// m >= cout_g. dst is sample n's first position in panel 0 of its group; panels are pstride
// apart. Each panel's positions follow each other 128 bytes apart, the stream a weight tile
// reads: with the panels interleaved per position, a 512-channel layer put 2 KiB between one
// panel's positions, which fall into 1/32 of L2's sets.
PYNN_TARGET_AVX512F void transpose_sample(const float* src, int64_t M, int64_t P, int64_t panels,
                                          int64_t pstride, float* dst) {
  const auto at = [&](int64_t q, int64_t m) -> float& {
    return dst[(m / kNr) * pstride + q * kNr + m % kNr];
  };
  const int64_t ld = panels * kNr;
  int64_t q8 = 0;
  for (; q8 + 8 <= P; q8 += 8) {
    int64_t m8 = 0;
    for (; m8 + 8 <= M; m8 += 8)  // 8 x 8 blocks never straddle two panels
      transpose8_block(src + m8 * P + q8, P, 8, &at(q8, m8), kNr, 8);
    for (int64_t q = q8; q < q8 + 8; ++q)
      for (int64_t m = m8; m < ld; ++m) at(q, m) = m < M ? src[m * P + q] : 0.0f;
  }
  for (int64_t q = q8; q < P; ++q)
    for (int64_t m = 0; m < ld; ++m) at(q, m) = m < M ? src[m * P + q] : 0.0f;
}

void pack_grad_output(const Conv2dGeom& g, const Plan& p, const float* gy, float* gyT) {
  const int64_t pstride = p.positions * kNr;
  parallel_for(0, g.G * g.N, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t gi = i / g.N, n = i % g.N;
      transpose_sample(gy + (n * g.Cout + gi * g.cout_g) * g.P, g.cout_g, g.P, p.panels, pstride,
                       gyT + gi * p.panels * pstride + n * g.P * kNr);
    }
  });
}

// Where weight_tile reads the input: channel r (of the 8) of position (n, oh, ow) through the
// tap is base[at + r * chan + n * sample + oh * row + ow * col], `at` applying the tap. In xb,
// a position's channels are one line (chan 1); in the input itself, planes (chan H * W).
struct WeightInput {
  const float* base;
  int64_t chan, sample, row, col;
};

// out[8][32] (+)= sum over the positions of output rows [u0, u1) (u = n * OH + oh) of the 8
// channels (`x`, tap offset `at`) times the 32 values of the panel's gyT at the position. Only
// the positions whose tap reads the input, oh in [oh_lo, oh_hi) and ow in [ow_lo, ow_hi), are
// summed: the rest would add products with the padding (zeros in xb, outside the input in
// place). Row r of the tile is at out + r * out_stride. kInPlace: the channels lie x.chan
// apart, else one float apart (xb).
template <bool kInPlace>
PYNN_TARGET_AVX512F void weight_tile(const WeightInput& x, int64_t at, const Conv2dGeom& g,
                                     int64_t u0, int64_t u1, int64_t oh_lo, int64_t oh_hi,
                                     int64_t ow_lo, int64_t ow_hi, const float* gyT, float* out,
                                     int64_t out_stride, bool accumulate) {
  __m512 acc[8][2];
  for (int r = 0; r < 8; ++r)
    for (int v = 0; v < 2; ++v)
      acc[r][v] = accumulate ? _mm512_load_ps(out + r * out_stride + 16 * v) : _mm512_setzero_ps();
  const int64_t chan = kInPlace ? x.chan : 1;
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t n = u / g.OH, oh = u - n * g.OH;
    if (oh < oh_lo || oh >= oh_hi) continue;
    const float* a = x.base + (at + n * x.sample + oh * x.row + ow_lo * x.col);
    const float* gq = gyT + (u * g.OW + ow_lo) * kNr;
    for (int64_t ow = ow_lo; ow < ow_hi; ++ow, a += x.col, gq += kNr) {
      const __m512 b0 = _mm512_load_ps(gq), b1 = _mm512_load_ps(gq + 16);
#pragma GCC unroll 8
      for (int r = 0; r < 8; ++r) {
        const __m512 av = _mm512_set1_ps(a[r * chan]);
        acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
      }
    }
  }
  for (int r = 0; r < 8; ++r)
    for (int v = 0; v < 2; ++v) _mm512_store_ps(out + r * out_stride + 16 * v, acc[r][v]);
}

// gw rows m < mn (kcol apart) from block[k][32], k = c * taps + t < kn: 8 x 8 transposes, so
// each row of gw gets its kn values in order.
PYNN_TARGET_AVX512F void unpack_block(const float* block, int64_t mn, int64_t kn, int64_t kcol,
                                      float* gw) {
  for (int64_t m8 = 0; m8 < mn; m8 += 8) {
    const int64_t rows = std::min<int64_t>(8, mn - m8);
    int64_t k8 = 0;
    for (; k8 + 8 <= kn; k8 += 8)
      transpose8_block(block + k8 * kNr + m8, kNr, 8, gw + m8 * kcol + k8, kcol,
                       static_cast<int>(rows));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = k8; k < kn; ++k) gw[(m8 + r) * kcol + k] = block[k * kNr + m8 + r];
  }
}

// Packs channel block cb of panel j of group gi for every phase of g's input gradient at once.
// Within a group, the weights of one output channel of g (the phases' input channel c) and 8
// input channels (their output channels m) are an 8 x KH*KW block of consecutive floats: 8 x 8
// register transposes turn its taps into rows of 8 channels, and each goes to its phase's
// slice, at[tap] (tap kh * KW + kw of g, null for a phase with no inputs), at that phase's
// index of the tap. Packed phase by phase, a gather per tap and 8 channels took 16% of a
// 14 x 14 layer's time; packed for all phases into one buffer ahead of the items, the weights
// went through memory twice (8%).
PYNN_TARGET_AVX512F void pack_phase_block(const Conv2dGeom& g, const float* w, int64_t gi,
                                          int64_t j, int64_t cb, float* const* at) {
  const int64_t kk = g.KH * g.KW, size = g.Cout * g.kcol;
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int64_t m0 = j * kNr, mn = std::min(kNr, g.cin_g - m0);
  for (int64_t c = 0; c < kCb; ++c) {
    const int64_t co = cb * kCb + c;  // g's output channel: the phases' input channel c
    for (int64_t m8 = 0; m8 < kNr; m8 += 8) {
      const int64_t rows = co < g.cout_g ? std::clamp<int64_t>(mn - m8, 0, 8) : 0;
      const int64_t at_s = ((gi * g.cout_g + co) * g.cin_g + m0 + m8) * kk;  // row 0's tap 0
      for (int64_t o8 = 0; o8 < kk; o8 += 8) {
        const int n = static_cast<int>(std::min<int64_t>(8, kk - o8));
        const __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes);
        __m256 v[8];
        // Past a row's last tap the loads run into the next row, whose lanes are not stored;
        // only at the end of the weight does that take a masked load (slow on AMD's cores).
        for (int r = 0; r < 8; ++r) {
          const int64_t q = at_s + r * kk + o8;
          v[r] = r >= rows       ? _mm256_setzero_ps()
                 : q + 8 <= size ? _mm256_loadu_ps(w + q)
                                 : _mm256_maskload_ps(w + q, live);
        }
        transpose8(v);
        for (int k = 0; k < n; ++k)
          if (at[o8 + k]) _mm256_store_ps(at[o8 + k] + c * kNr + m8, v[k]);
      }
    }
  }
}

// Whether the tiles of g read x in place instead of its copy xb: where they are stretches of an
// output row (rows of kMinRowTile or more) at horizontal stride 1 or 2, a tile's positions lie
// 1 or 2 floats apart in x, and whole channel blocks keep a block's reads within its group.
bool reads_in_place(const Conv2dGeom& g) {
  return g.OW >= kMinRowTile && g.sw <= kMaxDirectStride && g.cin_g % kCb == 0;
}

// Floats of the copy xb that a convolution's tiles read (0 in place).
int64_t copy_elems(const Conv2dGeom& g) {
  return reads_in_place(g) ? 0 : g.G * make_plan(g).x_group;
}

// One convolution the blocked kernel computes, out = conv(x, w) (+ bias): a forward, or one
// phase of an input gradient. Made once per call: where its tiles read (x in place, or its
// copy into xb, copy_elems(g) floats), its taps' offsets there, and the tap classes of its
// kinds of output rows. Not movable: row_classes refers to g.
class BlockedJob {
 public:
  BlockedJob(const Conv2dGeom& geom, const float* x, float* xb, const ConvOutput& out,
             const float* bias)
      : g(geom), p(make_plan(g)), direct_(reads_in_place(g)), out_(out), bias_(bias),
        src_(x), cb_stride_(kCb * g.HW), c_stride_(g.HW), toff_(static_cast<size_t>(p.taps)),
        start_(row_tile_starts(g, p)), row_kind_(static_cast<size_t>(p.row_tiles > 0 ? g.OH : 0)),
        row_classes_(g, p) {
    // The source the tiles read: x in place (reads_in_place), or its copy xb. In place, the
    // tap classes keep every read inside the input (TapClasses), so the padded copy is not
    // needed, and 3x3 layers of 64 to 512 channels at 56 x 56 down to 7 x 7 ran 3-5% faster
    // (one process, 2 threads; 6-14% at 16 threads on a Xeon), the copy's share of the time;
    // at stride 2, where the copy is of four times the input per output, ResNet's
    // downsampling 3x3 layers ran 16-29% faster.
    if (!direct_) {
      pack_input(g, p, x, xb);
      src_ = xb;
      cb_stride_ = p.cb_stride;
      c_stride_ = 1;
    }
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw)
        toff_[kh * g.KW + kw] =
            direct_ ? kh * g.dh * g.W + kw * g.dw : (kh * g.dh * p.Wp + kw * g.dw) * kCb;
    // With row tiles: the patterns of every kind of output row (row_kind[oh]: rows that reach
    // the same kernel rows inside the input, such as all the rows away from the top and bottom,
    // are one kind) and place s in the row, pattern row_kind[oh] * row_tiles + s.
    const TapRanges& in = row_classes_.ranges();
    std::vector<std::pair<int64_t, int64_t>> kinds;  // (first, last + 1) kernel row inside
    for (int64_t oh = 0; oh < static_cast<int64_t>(row_kind_.size()); ++oh) {
      std::pair<int64_t, int64_t> reach{g.KH, 0};
      for (int64_t kh = 0; kh < g.KH; ++kh)
        if (oh >= in.oh[2 * kh] && oh < in.oh[2 * kh + 1])
          reach = {std::min(reach.first, kh), kh + 1};
      const auto known = std::find(kinds.begin(), kinds.end(), reach);
      row_kind_[oh] = known - kinds.begin();
      if (known != kinds.end()) continue;
      kinds.push_back(reach);
      for (int64_t s = 0; s < p.row_tiles; ++s) {
        int64_t oh_at[kMr], ow_at[kMr];
        const int rows = static_cast<int>(start_[s + 1] - start_[s]);
        for (int r = 0; r < rows; ++r) oh_at[r] = oh, ow_at[r] = start_[s] + r;
        row_classes_.add(oh_at, ow_at, rows);
      }
    }
  }
  BlockedJob(const BlockedJob&) = delete;
  BlockedJob& operator=(const BlockedJob&) = delete;

  // Tile t for panel j of group gi over channel blocks [cb0, cb0 + ncb), whose panel slice is B:
  // its sums (+)= in sums[8][32] (started at the first K block), written out at the last.
  // across: a TapClasses of g for tiles across rows, which group their classes per tile.
  void tile(int64_t gi, int64_t j, int64_t cb0, int64_t ncb, int64_t t, const float* B,
            float* sums, bool first_block, bool last_block,
            std::optional<TapClasses>& across) const {
    const int64_t m0 = j * kNr;
    const int64_t xg = direct_ ? gi * g.cin_g * g.HW : gi * p.x_group;  // the group's offset
    // the tile's positions: their offsets in src, their places in y and their classes
    int64_t rows[kMr];
    int64_t y_at[kMr];
    const TapClasses* classes = &row_classes_;
    int64_t pattern;
    int n_rows;
    if (p.row_tiles > 0) {  // positions ow0 .. ow0 + n_rows - 1 of output row (n, oh)
      const int64_t u = t / p.row_tiles, s = t - u * p.row_tiles;
      const int64_t n = u / g.OH, oh = u - n * g.OH, ow0 = start_[s];
      n_rows = static_cast<int>(start_[s + 1] - ow0);
      const int64_t line =
          direct_ ? xg + (n * g.C + cb0 * kCb) * g.HW + (oh * g.sh - g.pt) * g.W - g.pl
                  : xg + cb0 * p.cb_stride + n * p.sample + (oh * g.sh * p.Wp) * kCb;
      const int64_t y0 = (n * g.Cout + gi * g.cout_g + m0) * out_.chan + oh * out_.row;
      for (int r = 0; r < n_rows; ++r) {
        rows[r] = line + (ow0 + r) * g.sw * (direct_ ? 1 : kCb);  // in place: kStep = sw
        y_at[r] = y0 + (ow0 + r) * out_.col;
      }
      pattern = row_kind_[oh] * p.row_tiles + s;
    } else {  // positions 8t .. 8t + n_rows - 1, across rows and samples
      const int64_t q0 = t * kMr;
      n_rows = static_cast<int>(std::min(kMr, p.positions - q0));
      int64_t n = q0 / g.P, oh = (q0 - n * g.P) / g.OW, ow = q0 - n * g.P - oh * g.OW;
      int64_t oh_at[kMr], ow_at[kMr];
      for (int r = 0; r < n_rows; ++r) {
        rows[r] = xg + cb0 * p.cb_stride + n * p.sample + (oh * g.sh * p.Wp + ow * g.sw) * kCb;
        y_at[r] = (n * g.Cout + gi * g.cout_g + m0) * out_.chan + oh * out_.row + ow * out_.col;
        oh_at[r] = oh;
        ow_at[r] = ow;
        if (++ow == g.OW) {
          ow = 0;
          if (++oh == g.OH) oh = 0, ++n;
        }
      }
      if (!across) across.emplace(g, p);
      across->clear();
      across->add(oh_at, ow_at, n_rows);
      classes = &*across;
      pattern = 0;
    }
    // The first K block starts the sums: in registers when the first class (if any) spans
    // every row (TapClasses puts such a class first), else from zeros written here.
    const TapClasses::Class* const first = classes->begin(pattern);
    const TapClasses::Class* const end = classes->end(pattern);
    const bool full_first = first != end && first->lo == 0 && first->hi == n_rows;
    if (first_block && !full_first) std::fill_n(sums, n_rows * kNr, 0.0f);
    for (const TapClasses::Class* k = first; k != end; ++k)
      kBlockedTiles[direct_ ? g.sw : 0][k->n == p.taps][k->hi - k->lo](
          src_, rows + k->lo, toff_.data(), classes->taps(*k), k->n, ncb, cb_stride_, c_stride_,
          p.w_cb, B, sums + k->lo * kNr, !first_block || k != first || !full_first);
    if (last_block) {
      const int cols = static_cast<int>(std::min(kNr, g.cout_g - m0));
      write_tile(sums, y_at, n_rows, cols, out_.chan, out_.col,
                 bias_ ? bias_ + gi * g.cout_g + m0 : nullptr, out_.y);
    }
  }

  const Conv2dGeom g;
  const Plan p;

 private:
  const bool direct_;
  const ConvOutput out_;
  const float* const bias_;
  const float* src_;
  int64_t cb_stride_, c_stride_;
  std::vector<int64_t> toff_, start_, row_kind_;
  TapClasses row_classes_;
};

// Runs jobs that share their groups and channel counts (a forward alone, or the phases of one
// input gradient) as one set of items, (group, panel, chunk of every job's tiles), taken
// dynamically by the threads. An item packs its panel slices of every job at once, K block by
// K block (pack(gi, j, cb0, ncb, slices): slices[i] for job i, [cb][tap][16][32] each), then
// runs each job's tiles over them: one pass over the weight serves every phase, and the phases
// need no parallel region each.
template <class Pack>
void run_jobs(const std::deque<BlockedJob>& jobs, Pack&& pack) {
  const Plan& p0 = jobs.front().p;
  const int64_t G = jobs.front().g.G, panels = p0.panels, cblocks = p0.cblocks;
  std::vector<int64_t> slice_at(jobs.size() + 1);  // job i's slice per channel block
  int64_t tiles = 0, max_tiles = 1, max_w_cb = 1;
  for (size_t i = 0; i < jobs.size(); ++i) {
    slice_at[i + 1] = slice_at[i] + jobs[i].p.w_cb;
    tiles += jobs[i].p.tiles;
    max_tiles = std::max(max_tiles, jobs[i].p.tiles);
    max_w_cb = std::max(max_w_cb, jobs[i].p.w_cb);
  }
  // K blocks: channel blocks whose panel slice fits kPanelBlockBytes, for each job: its tiles
  // read only their own.
  const int64_t w_cb = slice_at.back();
  const int64_t kcb = std::clamp<int64_t>(kPanelBlockBytes / (max_w_cb * 4), 1, cblocks);
  const int64_t kblocks = (cblocks + kcb - 1) / kcb;
  // Items: enough of them to go round the threads, and short enough that accumulators kept
  // across K blocks stay in L2.
  const int threads = in_parallel_region() ? 1 : get_num_threads();
  int64_t chunks = (4 * threads + G * panels - 1) / (G * panels);
  if (kblocks > 1) chunks = std::max(chunks, (tiles + kMaxItemTiles - 1) / kMaxItemTiles);
  chunks = std::clamp<int64_t>(chunks, 1, max_tiles);
  for_each_item_dynamic(G * panels * chunks, threads, [&](int64_t, int64_t it) {
    const int64_t chunk = it % chunks, j = (it / chunks) % panels, gi = it / (chunks * panels);
    // job i's tiles [t0[i], t1[i]), and their sums from acc_at[i] on when they outlive a K block
    std::vector<int64_t> t0(jobs.size()), t1(jobs.size()), acc_at(jobs.size() + 1);
    for (size_t i = 0; i < jobs.size(); ++i) {
      t0[i] = jobs[i].p.tiles * chunk / chunks;
      t1[i] = jobs[i].p.tiles * (chunk + 1) / chunks;
      acc_at[i + 1] = acc_at[i] + (kblocks > 1 ? (t1[i] - t0[i]) * kTile : 0);
    }
    // this thread's panel slices, then its accumulators
    thread_local cpu::AlignedBuffer buf;
    const int64_t b_elems = kcb * w_cb;
    float* const B = buf.get<float>(static_cast<size_t>(b_elems + std::max(acc_at.back(), kTile)));
    float* const acc = B + b_elems;
    std::vector<float*> slices(jobs.size());
    std::vector<std::optional<TapClasses>> across(jobs.size());
    for (int64_t kb = 0; kb < kblocks; ++kb) {
      const int64_t cb0 = kb * kcb, ncb = std::min(kcb, cblocks - cb0);
      for (size_t i = 0; i < jobs.size(); ++i) slices[i] = B + kcb * slice_at[i];
      pack(gi, j, cb0, ncb, slices.data());
      for (size_t i = 0; i < jobs.size(); ++i)
        for (int64_t t = t0[i]; t < t1[i]; ++t)
          jobs[i].tile(gi, j, cb0, ncb, t, slices[i],
                       kblocks > 1 ? acc + acc_at[i] + (t - t0[i]) * kTile : acc, kb == 0,
                       kb == kblocks - 1, across[i]);
    }
  });
}

#endif  // PYNN_BLOCKED_X86

// conv2d_blocked_applies, with the 1x1 kernel's limit on positions lifted when any_positions.
bool blocked_applies(const Conv2dGeom& g, bool any_positions) {
#if PYNN_BLOCKED_X86
  if (g.depthwise || g.N == 0 || g.P == 0) return false;
  if (g.pt < 0 || g.pl < 0) return false;  // an input gradient's padding is dil * (K-1) - pad
  // A 1x1 kernel does about as much copying into xb as multiplying, which pays only where the
  // GEMM's panels go half empty: the input gradient of 8 x 256 -> 128 at 28 x 28 measured 0.63x
  // of the implicit GEMM, 4 x 2048 -> 512 at 7 x 7 1.59x.
  if (g.KH * g.KW == 1 && g.P > kMaxPointwisePositions && !any_positions) return false;
  if (g.cin_g < kCb || round_up(g.cin_g, kCb) * 7 > g.cin_g * 8) return false;
  if (g.cout_g < kNr || round_up(g.cout_g, kNr) * 7 > g.cout_g * 8) return false;
  const char* env = std::getenv("PYNN_CONV_BLOCKED");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  return gemm_selects_avx512() && conv2d_direct_enabled();
#else
  (void)g, (void)any_positions;
  return false;
#endif
}

}  // namespace

bool conv2d_blocked_applies(const Conv2dGeom& g) { return blocked_applies(g, false); }

void conv2d_blocked_forward(const Conv2dGeom& g, const float* x, const float* w, const float* b,
                            float* y) {
#if PYNN_BLOCKED_X86
  const ConvWeightSource ws{w, g.cout_g * g.kcol, g.kcol, g.KH * g.KW, 1};
  const CallScratch xb(copy_elems(g));
  std::deque<BlockedJob> jobs;
  jobs.emplace_back(g, x, xb.data(), ConvOutput{y, g.P, g.OW, 1}, b);
  run_jobs(jobs, [&](int64_t gi, int64_t j, int64_t cb0, int64_t ncb, float* const* slices) {
    pack_panel(g, jobs.front().p, ws, gi, j, cb0, ncb, slices[0]);
  });
#else
  (void)g, (void)x, (void)w, (void)b, (void)y;
  PYNN_CHECK(false, "conv2d_blocked_forward: not built for this CPU");
#endif
}

bool conv2d_blocked_input_grad_applies(const Conv2dGeom& g) {
#if PYNN_BLOCKED_X86
  if (g.depthwise || g.N == 0 || g.P == 0 || g.HW == 0) return false;
  // A strided 1x1 is one phase, a matrix product scattered into every sh-th row and sw-th
  // column, which the GEMM path does faster: 4 x 128 -> 256 at 28 x 28 ran 0.88x as fast here.
  if (g.KH * g.KW == 1 && g.sh * g.sw > 1) return false;
  bool any = false;
  for (int64_t ph = 0; ph < g.sh; ++ph)
    for (int64_t pw = 0; pw < g.sw; ++pw) {
      const Conv2dGeom t = conv2d_input_grad_phase(g, ph, pw).geom;
      if (t.KH == 0 || t.KW == 0 || t.P == 0) continue;  // zeros, or no inputs in the phase
      // The 1x1 kernel's limit on positions weighs a copy into xb against the GEMM's for a
      // whole layer; a 1x1 phase of a larger kernel (a 3x3's first at stride 2) is a ninth of
      // its work, and the other phases run here anyway.
      if (!blocked_applies(t, g.KH * g.KW > 1)) return false;
      any = true;
    }
  return any;
#else
  (void)g;
  return false;
#endif
}

void conv2d_blocked_backward_input(const Conv2dGeom& g, const float* gy, const float* w,
                                   float* gx) {
#if PYNN_BLOCKED_X86
  // the phases, and where each one's inputs start in grad_input (sample 0, channel 0)
  std::vector<std::pair<ConvInputGradPhase, float*>> phases;
  int64_t copies = 0;  // floats of the phases' copies of grad_output
  for (int64_t ph = 0; ph < std::min(g.sh, g.H); ++ph)
    for (int64_t pw = 0; pw < std::min(g.sw, g.W); ++pw) {
      const ConvInputGradPhase f = conv2d_input_grad_phase(g, ph, pw);
      float* const origin = gx + ph * g.W + pw;
      if (!f.empty) {
        phases.emplace_back(f, origin);
        copies += copy_elems(f.geom);
        continue;
      }
      const Conv2dGeom& t = f.geom;  // no output reads these inputs: zeros
      parallel_for(0, g.N * g.C * t.OH, 64, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          float* row = origin + r / t.OH * g.HW + r % t.OH * g.sh * g.W;
          for (int64_t j = 0; j < t.OW; ++j) row[j * g.sw] = 0.0f;
        }
      });
    }
  const CallScratch xb(copies);
  std::deque<BlockedJob> jobs;
  // job[tap], index[tap]: the phase job whose kernel holds g's tap kh * KW + kw, and where;
  // kNone for a tap of a phase with no inputs (grad_input smaller than the stride)
  constexpr size_t kNone = ~size_t(0);
  int64_t taken = 0;
  std::vector<size_t> job(static_cast<size_t>(g.KH * g.KW), kNone);
  std::vector<int64_t> index(job.size());
  for (const auto& [f, origin] : phases) {
    const Conv2dGeom& t = f.geom;
    for (int64_t a = 0; a < t.KH; ++a)
      for (int64_t b = 0; b < t.KW; ++b) {
        job[f.tap0 + a * f.tap_row + b * f.tap_col] = jobs.size();
        index[f.tap0 + a * f.tap_row + b * f.tap_col] = a * t.KW + b;
      }
    jobs.emplace_back(t, gy, xb.data() + taken, ConvOutput{origin, g.HW, g.sh * g.W, g.sw},
                      nullptr);
    taken += copy_elems(t);
  }
  if (g.sh == 1 && g.sw == 1) {
    // One phase, every tap, one float apart back to front: the forward's packing, by 8 x 8
    // transposes of 8 taps. t's output channel m is g's input channel, its input channel c g's
    // output channel.
    const ConvWeightSource ws{w + (g.KH * g.KW - 1), g.cout_g * g.kcol, g.KH * g.KW, g.kcol, -1};
    run_jobs(jobs, [&](int64_t gi, int64_t j, int64_t cb0, int64_t ncb, float* const* slices) {
      pack_panel(jobs.front().g, jobs.front().p, ws, gi, j, cb0, ncb, slices[0]);
    });
    return;
  }
  run_jobs(jobs, [&](int64_t gi, int64_t j, int64_t cb0, int64_t ncb, float* const* slices) {
    std::vector<float*> at(job.size());
    for (int64_t cb = cb0; cb < cb0 + ncb; ++cb) {
      for (size_t o = 0; o < job.size(); ++o)
        at[o] = job[o] == kNone ? nullptr
                                : slices[job[o]] + (cb - cb0) * jobs[job[o]].p.w_cb +
                                      index[o] * kCb * kNr;
      pack_phase_block(g, w, gi, j, cb, at.data());
    }
  });
#else
  (void)g, (void)gy, (void)w, (void)gx;
  PYNN_CHECK(false, "conv2d_blocked_backward_input: not built for this CPU");
#endif
}

bool conv2d_blocked_weight_applies(const Conv2dGeom& g) {
#if PYNN_BLOCKED_X86
  if (!conv2d_blocked_applies(g)) return false;
  // Its items are (group, panel, channel block). Python asks this before it allocates (or not)
  // the other path's workspace, so the rule must not depend on the thread count.
  const int64_t items = g.G * ((g.cout_g + kNr - 1) / kNr) * ((g.cin_g + kCb - 1) / kCb);
  return items >= kMinWeightItems;
#else
  (void)g;
  return false;
#endif
}

void conv2d_blocked_backward_weight(const Conv2dGeom& g, const float* gy, const float* x,
                                    float* gw) {
#if PYNN_BLOCKED_X86
  const Plan p = make_plan(g);
  // The input is read in place where whole channel blocks keep a block's 8-channel reads within
  // its group: the tiles skip every position whose tap reads the padding, so the copy's zeros
  // are not needed.
  const bool in_place = g.cin_g % kCb == 0;
  const int64_t x_elems = in_place ? 0 : g.G * p.x_group;
  const int64_t gy_elems = g.G * p.panels * p.positions * kNr;
  const CallScratch scratch(x_elems + gy_elems);
  float* xb = scratch.data();
  float* gyT = xb + x_elems;  // x_elems is a multiple of 16: aligned
  if (!in_place) pack_input(g, p, x, xb);
  pack_grad_output(g, p, gy, gyT);
  const TapRanges in(g);  // the positions each tap reads inside the input
  const int threads = in_parallel_region() ? 1 : get_num_threads();
  for_each_item_dynamic(g.G * p.panels * p.cblocks, threads, [&](int64_t, int64_t it) {
    const int64_t cb = it % p.cblocks, j = (it / p.cblocks) % p.panels;
    const int64_t gi = it / (p.cblocks * p.panels);
    const int64_t m0 = j * kNr, mn = std::min(kNr, g.cout_g - m0);
    const int64_t c0 = cb * kCb, cn = std::min(kCb, g.cin_g - c0);
    thread_local cpu::AlignedBuffer buf;
    float* const block = buf.get<float>(static_cast<size_t>(p.w_cb));
    // channels c0 .. c0 + 15 of group gi, in place or in xb
    const WeightInput xin =
        in_place ? WeightInput{x + (gi * g.cin_g + c0) * g.HW, g.HW, g.C * g.HW, g.sh * g.W, g.sw}
                 : WeightInput{xb + gi * p.x_group + cb * p.cb_stride, 1, p.sample,
                               g.sh * p.Wp * kCb, g.sw * kCb};
    const float* gyg = gyT + (gi * p.panels + j) * p.positions * kNr;
    // Output rows in chunks of about kWeightChunk positions, so that their slices of gyT and
    // the input stay in L2 while the 2 * taps tiles pass over them.
    const int64_t rows = g.N * g.OH, chunk = std::max<int64_t>(1, kWeightChunk / g.OW);
    for (int64_t u0 = 0; u0 < rows; u0 += chunk) {
      const int64_t u1 = std::min(rows, u0 + chunk);
      for (int64_t kh = 0; kh < g.KH; ++kh)
        for (int64_t kw = 0; kw < g.KW; ++kw) {
          const int64_t t = kh * g.KW + kw;
          const int64_t at = in_place ? (kh * g.dh - g.pt) * g.W + kw * g.dw - g.pl
                                      : (kh * g.dh * p.Wp + kw * g.dw) * kCb;
          // block[c * taps + t][32]: gw's order within a row
          for (int64_t h = 0; h < cn; h += 8) {
            const int64_t oh_lo = in.oh[2 * kh], oh_hi = in.oh[2 * kh + 1];
            const int64_t ow_lo = in.ow[2 * kw], ow_hi = in.ow[2 * kw + 1];
            float* const rows_out = block + (h * p.taps + t) * kNr;
            if (in_place)
              weight_tile<true>(xin, at + h * g.HW, g, u0, u1, oh_lo, oh_hi, ow_lo, ow_hi, gyg,
                                rows_out, p.taps * kNr, u0 > 0);
            else
              weight_tile<false>(xin, at + h, g, u0, u1, oh_lo, oh_hi, ow_lo, ow_hi, gyg,
                                 rows_out, p.taps * kNr, u0 > 0);
          }
        }
    }
    unpack_block(block, mn, cn * p.taps, g.kcol, gw + (gi * g.cout_g + m0) * g.kcol + c0 * p.taps);
  });
#else
  (void)g, (void)gy, (void)x, (void)gw;
  PYNN_CHECK(false, "conv2d_blocked_backward_weight: not built for this CPU");
#endif
}

}  // namespace pynn
