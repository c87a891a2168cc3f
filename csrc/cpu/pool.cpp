// CPU pooling. NCHW work is split by planes: the "interior" columns of each output row (windows
// wholly inside the input) are computed a vector block at a time, tap by tap, from rows split by
// column phase so every load is contiguous; border columns take the general window scan. NHWC
// work is split by output pixels and vectorises over channels. Window bounds, divisors and
// covering ranges all come from math/pool.h, the same functions the CUDA kernels call.
#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/dispatch.h"
#include "core/macros.h"
#include "core/parallel.h"
#include "math/pool.h"
#include "ops/pool.h"

namespace pynn {

int64_t pool_output_size_host(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                              int64_t dilation, bool ceil_mode) {
  PYNN_CHECK(stride > 0 && dilation > 0, "pool_output_size: stride and dilation must be positive");
  return pool_output_size(in, kernel, stride, pad, dilation, ceil_mode);
}

namespace {

// Hot loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time
// (target_clones). Their bodies are templates forced inline into the stamped entry points so
// that every clone gets its own vector code.

constexpr int64_t kGrain = 16384;  // elements of work per task, at least

// Planes per task so that each task touches about kGrain elements.
int64_t plane_grain(int64_t plane_elems) {
  return std::max<int64_t>(1, kGrain / std::max<int64_t>(plane_elems, 1));
}

// Column-wise facts shared by every row and plane of one call.
struct MaxColumns {
  std::vector<MaxTaps> taps;  // per output column
  int64_t lo = 0, hi = 0;     // columns [lo, hi) have all kernel taps inside the input
  // Tap jw of output column ow reads input column s*ow + jw*d - p = s*(ow + tap_slot) + tap_phase.
  std::vector<int64_t> tap_slot, tap_phase;
};

MaxColumns max_columns(const PoolDim& d) {
  MaxColumns c;
  c.taps.resize(d.out);
  c.lo = d.out;
  for (int64_t o = 0; o < d.out; ++o) {
    c.taps[o] = max_pool_taps(o, d);
    const bool interior = c.taps[o].count == d.kernel && c.taps[o].first == o * d.stride - d.pad;
    if (interior && c.lo == d.out) c.lo = o;
    if (interior) c.hi = o + 1;
  }
  if (c.hi < c.lo) c.hi = c.lo;
  for (int64_t jw = 0; jw < d.kernel; ++jw) {
    const int64_t t = jw * d.dilation - d.pad;
    const int64_t slot = pool_div_floor(t, d.stride);
    c.tap_slot.push_back(slot);
    c.tap_phase.push_back(t - slot * d.stride);
  }
  return c;
}

// The general window scan, in torch's order (rows, then columns). The argmax starts at the first
// tap inside the input, as torch's does, so an all -inf window still names a real position; a
// window with no tap inside (dilation only) stores torch's index for it and the backward skips it.
template <class T, class I, bool kIdx>
PYNN_ALWAYS_INLINE void max_window_taps(const T* x, T* y, I* ind, const MaxTaps& th,
                                        const MaxTaps& tw, const MaxPoolParams& p) {
  const int64_t W = p.w.in;
  T best = -std::numeric_limits<T>::infinity();
  int64_t arg =
      kPoolTapIndex<I> ? th.skipped * p.w.kernel + tw.skipped : th.first * W + tw.first;
  for (int64_t jh = 0; jh < th.count; ++jh) {
    const int64_t h = th.first + jh * p.h.dilation;
    for (int64_t jw = 0; jw < tw.count; ++jw) {
      const int64_t idx = h * W + tw.first + jw * p.w.dilation;
      const T v = x[idx];
      if (max_pool_takes(v, best)) {
        best = v;
        arg = kPoolTapIndex<I> ? (th.skipped + jh) * p.w.kernel + tw.skipped + jw : idx;
      }
    }
  }
  *y = best;
  if constexpr (kIdx) *ind = static_cast<I>(arg);
}

// With column stride s, input column c = s*j + q is slot j of phase q. Interior sweeps read
// each tap at a fixed offset from the output column, i.e. from one phase: splitting every row of
// the plane into its s phases once (one pass, L1/L2 resident) turns all tap reads into
// contiguous vector loads. (Strided loads straight from the plane leave GCC a scalar epilogue in
// every block, which cost more than the whole split.)
template <class T>
struct PhaseSplit {
  const T* data;  // the plane itself when s == 1
  int64_t W, H, slots, s;
  const T* row(int64_t h, int64_t q) const {
    return s == 1 ? data + h * W : data + (q * H + h) * slots;
  }
};

template <class T>
PYNN_ALWAYS_INLINE PhaseSplit<T> split_phases(const T* x, int64_t H, int64_t W, int64_t s,
                                              std::vector<T>& scratch) {
  if (s == 1) return {x, W, H, W, 1};
  const int64_t slots = (W + s - 1) / s;
  scratch.resize(static_cast<size_t>(s * H * slots));
  T* d = scratch.data();
  for (int64_t h = 0; h < H; ++h) {
    const T* r = x + h * W;
    if (s == 2) {
      T* __restrict e = d + h * slots;
      T* __restrict o = d + (H + h) * slots;
      const int64_t pairs = W / 2;
      for (int64_t j = 0; j < pairs; ++j) {
        e[j] = r[2 * j];
        o[j] = r[2 * j + 1];
      }
      if (W % 2) e[pairs] = r[W - 1];
    } else {
      for (int64_t c = 0; c < W; ++c) d[((c % s) * H + h) * slots + c / s] = r[c];
    }
  }
  return {d, W, H, slots, s};
}

// Interior outputs in blocks of kBlock: the running max and argmax of a block live in small
// arrays (registers or L1) while the window's taps stream past. The lane loops must reach GCC's
// loop vectoriser as loops: fully unrolled early, they end up as scalar compares and branches,
// hence `unroll 1`. (Generic vector types do not help: GCC lowers them in the helper for the
// baseline ISA before inlining into the target_clones clone.)
template <class T>
constexpr int kBlock = 64 / sizeof(T);

// Output columns [ow0, ow0 + kBlock) of one output row, all interior.
template <class T, class I, bool kIdx>
PYNN_ALWAYS_INLINE void max_interior_block(const PhaseSplit<T>& src, T* __restrict y,
                                           I* __restrict ind, int64_t ow0, const MaxTaps& th,
                                           const MaxPoolParams& p, const MaxColumns& cols) {
  constexpr int B = kBlock<T>;
  constexpr bool kTap = kPoolTapIndex<I>;
  // Lanes keep tap numbers as int32 (the width of the float compare masks) until the store.
  using Lane = std::conditional_t<kTap, int32_t, I>;
  const int64_t W = p.w.in, s = p.w.stride;
  T m[B];
  Lane id[B];
  for (int64_t jh = 0; jh < th.count; ++jh) {
    const int64_t h = th.first + jh * p.h.dilation;
    for (int64_t jw = 0; jw < p.w.kernel; ++jw) {
      const int64_t slot = ow0 + cols.tap_slot[jw], q = cols.tap_phase[jw];
      const T* __restrict r = src.row(h, q) + slot;
      // Lane i's argmax candidate: a tap number (the same in every lane) or a flat index.
      const int64_t base = kTap ? (th.skipped + jh) * p.w.kernel + jw : h * W + s * slot + q;
      const int64_t step = kTap ? 0 : s;
      if (jh == 0 && jw == 0) {
        // The first tap seeds the running max; torch's -inf start gives the same value and index.
#pragma GCC unroll 1
        for (int i = 0; i < B; ++i) {
          m[i] = r[i];
          if constexpr (kIdx) id[i] = static_cast<Lane>(base + i * step);
        }
        continue;
      }
#pragma GCC unroll 1
      for (int i = 0; i < B; ++i) {
        const T v = r[i];
        const bool take = max_pool_takes(v, m[i]);
        m[i] = take ? v : m[i];
        if constexpr (kIdx) id[i] = take ? static_cast<Lane>(base + i * step) : id[i];
      }
    }
  }
#pragma GCC unroll 1
  for (int i = 0; i < B; ++i) y[i] = m[i];
  if constexpr (kIdx) {
#pragma GCC unroll 1
    for (int i = 0; i < B; ++i) ind[i] = static_cast<I>(id[i]);
  }
}

template <class T, class I, bool kIdx>
PYNN_ALWAYS_INLINE void max_plane_nchw(const T* x, T* y, I* ind, const MaxPoolParams& p,
                                       const MaxColumns& cols, std::vector<T>& scratch) {
  constexpr int64_t B = kBlock<T>;
  const int64_t OW = p.w.out;
  const int64_t n = cols.hi - cols.lo;
  // Runs shorter than a block take the general path.
  const bool sweep = n >= B;
  PhaseSplit<T> src{x, p.w.in, p.h.in, p.w.in, 1};
  if (sweep) src = split_phases(x, p.h.in, p.w.in, p.w.stride, scratch);
  for (int64_t oh = 0; oh < p.h.out; ++oh) {
    const MaxTaps th = max_pool_taps(oh, p.h);
    T* yr = y + oh * OW;
    I* ir = kIdx ? ind + oh * OW : nullptr;
    const bool fast = sweep && th.count > 0;
    for (int64_t ow = 0; ow < OW; ++ow) {
      if (fast && ow == cols.lo) ow = cols.hi;
      if (ow == OW) break;
      max_window_taps<T, I, kIdx>(x, yr + ow, kIdx ? ir + ow : nullptr, th, cols.taps[ow], p);
    }
    if (!fast) continue;
    int64_t i = cols.lo;
    for (; i + B <= cols.hi; i += B)
      max_interior_block<T, I, kIdx>(src, yr + i, kIdx ? ir + i : nullptr, i, th, p, cols);
    // The tail reruns a block shifted left to end at the last interior column: the overlap
    // recomputes identical values, which beats a scalar tail.
    if (i < cols.hi) {
      i = cols.hi - B;
      max_interior_block<T, I, kIdx>(src, yr + i, kIdx ? ir + i : nullptr, i, th, p, cols);
    }
  }
}

template <class T, class I, bool kIdx>
PYNN_ALWAYS_INLINE void max_nchw_planes(const T* x, T* y, I* ind, const PoolGeometry& g,
                                        const MaxPoolParams& p, const MaxColumns& cols,
                                        int64_t b, int64_t e) {
  const int64_t in_plane = g.H * g.W, out_plane = g.OH * g.OW;
  std::vector<T> scratch;
  for (int64_t pl = b; pl < e; ++pl)
    max_plane_nchw<T, I, kIdx>(x + pl * in_plane, y + pl * out_plane,
                               kIdx ? ind + pl * out_plane : nullptr, p, cols, scratch);
}

// Output rows [b, e) of an NHWC tensor (row r = sample r / OH, output row r % OH).
template <class T, class I, bool kIdx>
PYNN_ALWAYS_INLINE void max_nhwc_rows(const T* x, T* y, I* ind, const PoolGeometry& g,
                                      const MaxPoolParams& p, const MaxColumns& cols, int64_t b,
                                      int64_t e) {
  const int64_t C = g.C, W = g.W;
  // Tap numbers are tracked in int32 lanes (the width of the float compare masks; byte lanes
  // vectorise poorly) and narrowed once per pixel.
  constexpr bool kTap = kPoolTapIndex<I>;
  using Lane = std::conditional_t<kTap, int32_t, I>;
  std::vector<Lane> lanes(kTap && kIdx ? C : 0);
  for (int64_t r = b; r < e; ++r) {
    const int64_t n = r / g.OH, oh = r % g.OH;
    const MaxTaps th = max_pool_taps(oh, p.h);
    const T* xn = x + n * g.H * W * C;
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      const MaxTaps& tw = cols.taps[ow];
      T* __restrict yv = y + (r * g.OW + ow) * C;
      I* __restrict out_iv = kIdx ? ind + (r * g.OW + ow) * C : nullptr;
      Lane* __restrict iv;
      if constexpr (kTap) iv = lanes.data();
      else iv = out_iv;
      if (th.count == 0 || tw.count == 0) {
        // No tap inside the input: torch's index (the backward skips such windows).
        const I empty = static_cast<I>(kTap ? 0 : th.first * W + tw.first);
        for (int64_t c = 0; c < C; ++c) yv[c] = -std::numeric_limits<T>::infinity();
        if constexpr (kIdx)
          for (int64_t c = 0; c < C; ++c) out_iv[c] = empty;
        continue;
      }
      bool first = true;
      for (int64_t jh = 0; jh < th.count; ++jh) {
        const int64_t h = th.first + jh * p.h.dilation;
        for (int64_t jw = 0; jw < tw.count; ++jw) {
          const int64_t flat = h * W + tw.first + jw * p.w.dilation;
          const T* __restrict xv = xn + flat * C;
          const Lane arg =
              static_cast<Lane>(kTap ? (th.skipped + jh) * p.w.kernel + tw.skipped + jw : flat);
          if (first) {
            std::memcpy(yv, xv, sizeof(T) * C);
            if constexpr (kIdx)
              for (int64_t c = 0; c < C; ++c) iv[c] = arg;
            first = false;
            continue;
          }
          for (int64_t c = 0; c < C; ++c) {
            const T v = xv[c];
            const bool take = max_pool_takes(v, yv[c]);
            yv[c] = take ? v : yv[c];
            if constexpr (kIdx) iv[c] = take ? arg : iv[c];
          }
        }
      }
      if constexpr (kTap && kIdx)
        for (int64_t c = 0; c < C; ++c) out_iv[c] = static_cast<I>(iv[c]);
    }
  }
}

#define PYNN_STAMP_MAX(T, I, K)                                                                \
  PYNN_CPU_MULTIVERSION void max_nchw_mv(const T* x, T* y, I* ind, std::bool_constant<K>,          \
                                     const PoolGeometry& g, const MaxPoolParams& p,            \
                                     const MaxColumns& cols, int64_t b, int64_t e) {           \
    max_nchw_planes<T, I, K>(x, y, ind, g, p, cols, b, e);                                     \
  }                                                                                            \
  PYNN_CPU_MULTIVERSION void max_nhwc_mv(const T* x, T* y, I* ind, std::bool_constant<K>,          \
                                     const PoolGeometry& g, const MaxPoolParams& p,            \
                                     const MaxColumns& cols, int64_t b, int64_t e) {           \
    max_nhwc_rows<T, I, K>(x, y, ind, g, p, cols, b, e);                                       \
  }
PYNN_STAMP_MAX(float, int32_t, false)
PYNN_STAMP_MAX(float, uint8_t, true)
PYNN_STAMP_MAX(float, int32_t, true)
PYNN_STAMP_MAX(float, int64_t, true)
PYNN_STAMP_MAX(double, int32_t, false)
PYNN_STAMP_MAX(double, uint8_t, true)
PYNN_STAMP_MAX(double, int32_t, true)
PYNN_STAMP_MAX(double, int64_t, true)
#undef PYNN_STAMP_MAX

template <class T, class I, bool kIdx>
void max_forward(const T* x, T* y, I* ind, const PoolGeometry& g, const MaxPoolParams& p) {
  const MaxColumns cols = max_columns(p.w);
  const std::bool_constant<kIdx> k;
  if (g.layout == PoolLayout::NCHW) {
    parallel_for(0, g.N * g.C, plane_grain(g.H * g.W + g.OH * g.OW), [&](int64_t b, int64_t e) {
      max_nchw_mv(x, y, ind, k, g, p, cols, b, e);
    });
  } else {
    const int64_t row_work = std::max<int64_t>(1, g.OW * g.C * p.h.kernel * p.w.kernel);
    parallel_for(0, g.N * g.OH, std::max<int64_t>(1, kGrain / row_work), [&](int64_t b, int64_t e) {
      max_nhwc_mv(x, y, ind, k, g, p, cols, b, e);
    });
  }
}

// NCHW scatters: each window's gradient goes to its argmax, summed in output order where windows
// overlap. Windows with no tap inside the input (dilation only) have no argmax and give nothing.
template <class T, class I>
void max_backward_nchw(const T* go, const I* ind, T* gi, const PoolGeometry& g,
                       const MaxPoolParams& p, const char* op) {
  const MaxColumns cols = max_columns(p.w);
  const int64_t in_plane = g.H * g.W, out_plane = g.OH * g.OW;
  // Tap numbers (uint8 storage) become flat offsets from the window's corner.
  const int64_t taps = p.h.kernel * p.w.kernel;
  std::vector<int64_t> tap_offset(kPoolTapIndex<I> ? taps : 0);
  for (int64_t t = 0; t < static_cast<int64_t>(tap_offset.size()); ++t)
    tap_offset[t] = t / p.w.kernel * p.h.dilation * g.W + t % p.w.kernel * p.w.dilation;
  parallel_for(0, g.N * g.C, plane_grain(in_plane + out_plane), [&](int64_t b, int64_t e) {
    // Locals, so the scatter loop keeps them in registers rather than reloading them through
    // the captured references after every store.
    const int64_t OH = g.OH, OW = g.OW, sh = p.h.stride, ph = p.h.pad, sw = p.w.stride,
                  pw = p.w.pad, W = g.W;
    const int64_t* __restrict offset = tap_offset.data();
    const MaxTaps* __restrict col_taps = cols.taps.data();
    for (int64_t pl = b; pl < e; ++pl) {
      T* __restrict gp = gi + pl * in_plane;
      std::fill(gp, gp + in_plane, T(0));
      const T* __restrict gop = go + pl * out_plane;
      const I* __restrict ip = ind + pl * out_plane;
      for (int64_t oh = 0; oh < OH; ++oh) {
        if (max_pool_taps(oh, p.h).count == 0) continue;
        const int64_t corner_row = (oh * sh - ph) * W;
        for (int64_t ow = 0; ow < OW; ++ow) {
          if (col_taps[ow].count == 0) continue;
          const int64_t o = oh * OW + ow;
          const int64_t v = static_cast<int64_t>(ip[o]);
          int64_t idx = v;
          if constexpr (kPoolTapIndex<I>)
            idx = v < taps ? corner_row + ow * sw - pw + offset[v] : -1;
          if (idx < 0 || idx >= in_plane)
            throw ValueError(detail::concat(op, ": indices holds ", v, ", which names no input ",
                                            "position of window (", oh, ", ", ow, ")"));
          gp[idx] += gop[o];
        }
      }
    }
  });
}

// NHWC gathers instead, like the CUDA kernel (and with its covering and tap tests): each input
// pixel sums, channel-wise, the gradients of the covering outputs whose argmax it is, in output
// order. That vectorises over channels and writes every element once, with no zeroing pass.
template <class T, class I>
PYNN_ALWAYS_INLINE void max_backward_nhwc_pixels(const T* go, const I* ind, T* gi,
                                                 const PoolGeometry& g, const MaxPoolParams& p,
                                                 int64_t b, int64_t e) {
  const int64_t C = g.C;
  const int64_t span_h = (p.h.kernel - 1) * p.h.dilation + 1;
  const int64_t span_w = (p.w.kernel - 1) * p.w.dilation + 1;
  for (int64_t i = b; i < e; ++i) {
    const int64_t w = i % g.W, h = (i / g.W) % g.H, n = i / (g.W * g.H);
    T* __restrict gv = gi + i * C;
    for (int64_t c = 0; c < C; ++c) gv[c] = T(0);
    int64_t oh0, oh1, ow0, ow1;
    pool_covering(h, span_h, p.h.stride, p.h.pad, g.OH, oh0, oh1);
    pool_covering(w, span_w, p.w.stride, p.w.pad, g.OW, ow0, ow1);
    for (int64_t oh = oh0; oh < oh1; ++oh) {
      if (!max_pool_is_tap(h, oh, p.h)) continue;
      for (int64_t ow = ow0; ow < ow1; ++ow) {
        if (!max_pool_is_tap(w, ow, p.w)) continue;
        const int64_t o = ((n * g.OH + oh) * g.OW + ow) * C;
        const I mine = static_cast<I>(max_pool_index<I>(h, w, oh, ow, p));
        const T* __restrict gov = go + o;
        const I* __restrict iv = ind + o;
        for (int64_t c = 0; c < C; ++c) gv[c] = iv[c] == mine ? gv[c] + gov[c] : gv[c];
      }
    }
  }
}

#define PYNN_STAMP_MAX_BACKWARD(T, I)                                                          \
  PYNN_CPU_MULTIVERSION void max_backward_nhwc_mv(const T* go, const I* ind, T* gi,                \
                                              const PoolGeometry& g, const MaxPoolParams& p,   \
                                              int64_t b, int64_t e) {                          \
    max_backward_nhwc_pixels<T, I>(go, ind, gi, g, p, b, e);                                   \
  }
PYNN_STAMP_MAX_BACKWARD(float, uint8_t)
PYNN_STAMP_MAX_BACKWARD(float, int32_t)
PYNN_STAMP_MAX_BACKWARD(float, int64_t)
PYNN_STAMP_MAX_BACKWARD(double, uint8_t)
PYNN_STAMP_MAX_BACKWARD(double, int32_t)
PYNN_STAMP_MAX_BACKWARD(double, int64_t)
#undef PYNN_STAMP_MAX_BACKWARD

template <class T, class I>
void max_backward_nhwc(const T* go, const I* ind, T* gi, const PoolGeometry& g,
                       const MaxPoolParams& p) {
  const int64_t work = std::max<int64_t>(1, 3 * g.C);
  parallel_for(0, g.N * g.H * g.W, std::max<int64_t>(1, kGrain / work),
               [&](int64_t b, int64_t e) { max_backward_nhwc_mv(go, ind, gi, g, p, b, e); });
}

// ---- average pooling ----

struct AvgTables {
  std::vector<AvgWindow> hwin, wwin;  // per output row / column
  int64_t lo = 0, hi = 0;             // columns whose window is a full, unclipped kernel
  std::vector<int64_t> tap_slot, tap_phase;  // as in MaxColumns, for the interior columns
  std::vector<int64_t> cover_lo_h, cover_hi_h, cover_lo_w, cover_hi_w;  // per input row / column
};

AvgTables avg_tables(const AvgPoolParams& p) {
  AvgTables t;
  t.hwin.resize(p.h.out);
  t.wwin.resize(p.w.out);
  for (int64_t o = 0; o < p.h.out; ++o) t.hwin[o] = avg_pool_window(o, p.h);
  t.lo = p.w.out;
  for (int64_t o = 0; o < p.w.out; ++o) {
    t.wwin[o] = avg_pool_window(o, p.w);
    const AvgWindow& w = t.wwin[o];
    const bool interior = !p.w.adaptive && w.end - w.start == p.w.kernel && w.padded == p.w.kernel;
    if (interior && t.lo == p.w.out) t.lo = o;
    if (interior) t.hi = o + 1;
  }
  if (t.hi < t.lo) t.hi = t.lo;
  if (!p.w.adaptive) {
    for (int64_t jw = 0; jw < p.w.kernel; ++jw) {
      const int64_t off = jw - p.w.pad;
      const int64_t slot = pool_div_floor(off, p.w.stride);
      t.tap_slot.push_back(slot);
      t.tap_phase.push_back(off - slot * p.w.stride);
    }
  }
  auto cover = [](const AvgDim& d, std::vector<int64_t>& lo, std::vector<int64_t>& hi) {
    lo.resize(d.in);
    hi.resize(d.in);
    for (int64_t i = 0; i < d.in; ++i) avg_pool_covering(i, d, lo[i], hi[i]);
  };
  cover(p.h, t.cover_lo_h, t.cover_hi_h);
  cover(p.w, t.cover_lo_w, t.cover_hi_w);
  return t;
}

// sum / div rounded to T. For float, sum * (1/div) in double is within two double ulps of the
// quotient, which the rounding to float hides unless the quotient lies that close to a midpoint
// between two floats (odds about 2^-28 per element); a vector multiply is several times cheaper
// than a divide. double keeps the exact divide.
template <class T>
struct AvgScale {
  double inv, div;
  explicit AvgScale(double d) : inv(1.0 / d), div(d) {}
  PYNN_ALWAYS_INLINE T operator()(double sum) const {
    if constexpr (std::is_same_v<T, float>) return static_cast<T>(sum * inv);
    else return static_cast<T>(sum / div);
  }
};

// Sum of n contiguous values; several partial sums so the loop vectorises and pipelines.
template <class T>
PYNN_ALWAYS_INLINE double sum_run(const T* x, int64_t n) {
  double acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += static_cast<double>(x[i + j]);
  double s = 0;
  for (; i < n; ++i) s += static_cast<double>(x[i]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + s;
}

// One plane: border (and adaptive) windows one by one; the interior columns of each row are
// swept tap by tap over phase-split rows into a row of double accumulators.
template <class T>
PYNN_ALWAYS_INLINE void avg_plane_nchw(const T* x, T* y, const AvgPoolParams& p,
                                       const AvgTables& t, std::vector<double>& acc,
                                       std::vector<T>& scratch) {
  const int64_t W = p.w.in, OW = p.w.out;
  const int64_t n = t.hi - t.lo;
  const bool sweep = n >= 4;
  PhaseSplit<T> src{x, W, p.h.in, W, 1};
  if (sweep) src = split_phases(x, p.h.in, W, p.w.stride, scratch);
  double* __restrict a = acc.data();
  for (int64_t oh = 0; oh < p.h.out; ++oh) {
    const AvgWindow& wh = t.hwin[oh];
    T* __restrict yr = y + oh * OW;
    for (int64_t ow = 0; ow < OW; ++ow) {
      if (sweep && ow == t.lo) ow = t.hi;
      if (ow == OW) break;
      const AvgWindow& ww = t.wwin[ow];
      double sum = 0;
      for (int64_t h = wh.start; h < wh.end; ++h) sum += sum_run(x + h * W + ww.start, ww.end - ww.start);
      yr[ow] = static_cast<T>(sum / static_cast<double>(avg_pool_divisor(p, wh, ww)));
    }
    if (!sweep) continue;
    for (int64_t i = 0; i < n; ++i) a[i] = 0.0;
    for (int64_t h = wh.start; h < wh.end; ++h)
      for (int64_t jw = 0; jw < p.w.kernel; ++jw) {
        const T* __restrict r = src.row(h, t.tap_phase[jw]) + t.lo + t.tap_slot[jw];
        for (int64_t i = 0; i < n; ++i) a[i] += static_cast<double>(r[i]);
      }
    // Interior columns share one divisor per row.
    const AvgScale<T> scale(static_cast<double>(avg_pool_divisor(p, wh, t.wwin[t.lo])));
    for (int64_t i = 0; i < n; ++i) yr[t.lo + i] = scale(a[i]);
  }
}

template <class T>
PYNN_ALWAYS_INLINE void avg_nchw_planes(const T* x, T* y, const PoolGeometry& g,
                                        const AvgPoolParams& p, const AvgTables& t, int64_t b,
                                        int64_t e) {
  const int64_t in_plane = g.H * g.W, out_plane = g.OH * g.OW;
  if (g.OH == 1 && g.OW == 1 && p.h.adaptive) {
    // Global average pooling: one contiguous reduction per plane.
    const double div = static_cast<double>(in_plane);
    for (int64_t pl = b; pl < e; ++pl)
      y[pl] = static_cast<T>(sum_run(x + pl * in_plane, in_plane) / div);
    return;
  }
  std::vector<double> acc(std::max<int64_t>(t.hi - t.lo, 1));
  std::vector<T> scratch;
  for (int64_t pl = b; pl < e; ++pl)
    avg_plane_nchw(x + pl * in_plane, y + pl * out_plane, p, t, acc, scratch);
}

// Output pixels [b, e) of an NHWC tensor, vectorised over channels.
template <class T>
PYNN_ALWAYS_INLINE void avg_nhwc_pixels(const T* x, T* y, const PoolGeometry& g,
                                        const AvgPoolParams& p, const AvgTables& t, int64_t b,
                                        int64_t e) {
  const int64_t C = g.C, W = g.W;
  std::vector<double> acc(C);
  double* __restrict a = acc.data();
  for (int64_t o = b; o < e; ++o) {
    const int64_t ow = o % g.OW, oh = (o / g.OW) % g.OH, n = o / (g.OW * g.OH);
    const AvgWindow &wh = t.hwin[oh], &ww = t.wwin[ow];
    for (int64_t c = 0; c < C; ++c) a[c] = 0.0;
    for (int64_t h = wh.start; h < wh.end; ++h)
      for (int64_t w = ww.start; w < ww.end; ++w) {
        const T* __restrict xv = x + ((n * g.H + h) * W + w) * C;
        for (int64_t c = 0; c < C; ++c) a[c] += static_cast<double>(xv[c]);
      }
    const AvgScale<T> scale(static_cast<double>(avg_pool_divisor(p, wh, ww)));
    T* __restrict yv = y + o * C;
    for (int64_t c = 0; c < C; ++c) yv[c] = scale(a[c]);
  }
}

// Backward by gather: every input sums grad / divisor over the outputs whose window holds it,
// in output order, which is also the order torch's scatter adds them in. The quotients of a
// plane are formed once (q), as torch forms each once before scattering.
template <class T>
PYNN_ALWAYS_INLINE void avg_backward_nchw_planes(const T* go, T* gi, const PoolGeometry& g,
                                                 const AvgPoolParams& p, const AvgTables& t,
                                                 const T* divisor, int64_t b, int64_t e) {
  const int64_t in_plane = g.H * g.W, out_plane = g.OH * g.OW;
  if (out_plane == 1 && p.h.adaptive) {
    // Global average pooling: every input of a plane gets the same share.
    for (int64_t pl = b; pl < e; ++pl) {
      const T v = go[pl] / divisor[0];
      T* __restrict gp = gi + pl * in_plane;
      for (int64_t i = 0; i < in_plane; ++i) gp[i] = v;
    }
    return;
  }
  std::vector<T> qbuf(out_plane);
  T* __restrict q = qbuf.data();
  for (int64_t pl = b; pl < e; ++pl) {
    const T* __restrict gp = go + pl * out_plane;
    for (int64_t o = 0; o < out_plane; ++o) q[o] = gp[o] / divisor[o];
    T* gip = gi + pl * in_plane;
    for (int64_t h = 0; h < g.H; ++h) {
      T* __restrict row = gip + h * g.W;
      for (int64_t w = 0; w < g.W; ++w) row[w] = T(0);
      for (int64_t oh = t.cover_lo_h[h]; oh < t.cover_hi_h[h]; ++oh) {
        const T* qr = q + oh * g.OW;
        for (int64_t w = 0; w < g.W; ++w) {
          T sum = row[w];
          for (int64_t ow = t.cover_lo_w[w]; ow < t.cover_hi_w[w]; ++ow) sum += qr[ow];
          row[w] = sum;
        }
      }
    }
  }
}

// Input pixels [b, e) of an NHWC tensor.
template <class T>
PYNN_ALWAYS_INLINE void avg_backward_nhwc_pixels(const T* go, T* gi, const PoolGeometry& g,
                                                 const AvgPoolParams& p, const AvgTables& t,
                                                 const T* divisor, int64_t b, int64_t e) {
  const int64_t C = g.C;
  for (int64_t i = b; i < e; ++i) {
    const int64_t w = i % g.W, h = (i / g.W) % g.H, n = i / (g.W * g.H);
    T* __restrict gv = gi + i * C;
    for (int64_t c = 0; c < C; ++c) gv[c] = T(0);
    for (int64_t oh = t.cover_lo_h[h]; oh < t.cover_hi_h[h]; ++oh)
      for (int64_t ow = t.cover_lo_w[w]; ow < t.cover_hi_w[w]; ++ow) {
        const T div = divisor[oh * g.OW + ow];
        const T* __restrict gov = go + ((n * g.OH + oh) * g.OW + ow) * C;
        for (int64_t c = 0; c < C; ++c) gv[c] += gov[c] / div;
      }
  }
}

#define PYNN_STAMP_AVG(T)                                                                      \
  PYNN_CPU_MULTIVERSION void avg_nchw_mv(const T* x, T* y, const PoolGeometry& g,                  \
                                     const AvgPoolParams& p, const AvgTables& t, int64_t b,    \
                                     int64_t e) {                                              \
    avg_nchw_planes<T>(x, y, g, p, t, b, e);                                                   \
  }                                                                                            \
  PYNN_CPU_MULTIVERSION void avg_nhwc_mv(const T* x, T* y, const PoolGeometry& g,                  \
                                     const AvgPoolParams& p, const AvgTables& t, int64_t b,    \
                                     int64_t e) {                                              \
    avg_nhwc_pixels<T>(x, y, g, p, t, b, e);                                                   \
  }                                                                                            \
  PYNN_CPU_MULTIVERSION void avg_backward_nchw_mv(const T* go, T* gi, const PoolGeometry& g,       \
                                              const AvgPoolParams& p, const AvgTables& t,      \
                                              const T* divisor, int64_t b, int64_t e) {        \
    avg_backward_nchw_planes<T>(go, gi, g, p, t, divisor, b, e);                               \
  }                                                                                            \
  PYNN_CPU_MULTIVERSION void avg_backward_nhwc_mv(const T* go, T* gi, const PoolGeometry& g,       \
                                              const AvgPoolParams& p, const AvgTables& t,      \
                                              const T* divisor, int64_t b, int64_t e) {        \
    avg_backward_nhwc_pixels<T>(go, gi, g, p, t, divisor, b, e);                               \
  }
PYNN_STAMP_AVG(float)
PYNN_STAMP_AVG(double)
#undef PYNN_STAMP_AVG

template <class T>
void avg_forward_impl(const T* x, T* y, const PoolGeometry& g, const AvgPoolParams& p) {
  const AvgTables t = avg_tables(p);
  if (g.layout == PoolLayout::NCHW) {
    parallel_for(0, g.N * g.C, plane_grain(g.H * g.W + g.OH * g.OW), [&](int64_t b, int64_t e) {
      avg_nchw_mv(x, y, g, p, t, b, e);
    });
  } else {
    const int64_t pix_work = std::max<int64_t>(1, g.C * (g.H / g.OH + 1) * (g.W / g.OW + 1));
    parallel_for(0, g.N * g.OH * g.OW, std::max<int64_t>(1, kGrain / pix_work),
                 [&](int64_t b, int64_t e) { avg_nhwc_mv(x, y, g, p, t, b, e); });
  }
}

template <class T>
void avg_backward_impl(const T* go, T* gi, const PoolGeometry& g, const AvgPoolParams& p) {
  const AvgTables t = avg_tables(p);
  std::vector<T> divisor(g.OH * g.OW);
  for (int64_t oh = 0; oh < g.OH; ++oh)
    for (int64_t ow = 0; ow < g.OW; ++ow)
      divisor[oh * g.OW + ow] = static_cast<T>(avg_pool_divisor(p, t.hwin[oh], t.wwin[ow]));
  if (g.layout == PoolLayout::NCHW) {
    parallel_for(0, g.N * g.C, plane_grain(g.H * g.W + g.OH * g.OW), [&](int64_t b, int64_t e) {
      avg_backward_nchw_mv(go, gi, g, p, t, divisor.data(), b, e);
    });
  } else {
    parallel_for(0, g.N * g.H * g.W, std::max<int64_t>(1, kGrain / std::max<int64_t>(4 * g.C, 1)),
                 [&](int64_t b, int64_t e) {
                   avg_backward_nhwc_mv(go, gi, g, p, t, divisor.data(), b, e);
                 });
  }
}

void avg_forward(const TensorView& input, const TensorView& output, const PoolGeometry& g,
                 const AvgPoolParams& p, const char* op) {
  if (output.numel() == 0) return;
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    avg_forward_impl(input.ptr<T>(), output.ptr<T>(), g, p);
  });
}

void avg_backward(const TensorView& grad_output, const TensorView& grad_input,
                  const PoolGeometry& g, const AvgPoolParams& p, const char* op) {
  if (grad_input.numel() == 0) return;
  dispatch_floating(grad_output.dtype, op, "grad_output", [&](auto tag) {
    using T = decltype(tag);
    if (g.OH == 0 || g.OW == 0) {  // adaptive pooling to an empty output: nothing flows back
      std::fill(grad_input.ptr<T>(), grad_input.ptr<T>() + grad_input.numel(), T(0));
      return;
    }
    avg_backward_impl(grad_output.ptr<T>(), grad_input.ptr<T>(), g, p);
  });
}

template <class F>
void dispatch_index(const TensorView& ind, bool store, F&& f) {
  if (!store) f(static_cast<int32_t*>(nullptr), std::false_type{});
  else if (ind.dtype == DType::Int64) f(ind.ptr<int64_t>(), std::true_type{});
  else if (ind.dtype == DType::UInt8) f(ind.ptr<uint8_t>(), std::true_type{});
  else f(ind.ptr<int32_t>(), std::true_type{});
}

}  // namespace

void max_pool2d_forward_cpu(const TensorView& input, const TensorView& output,
                            const TensorView& indices, int64_t kh, int64_t kw, int64_t sh,
                            int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw) {
  const char* op = "max_pool2d_forward";
  const PoolGeometry g = pool_check_pair(input, output, op, "input", "output");
  const MaxPoolParams p = make_max_pool_params(g, kh, kw, sh, sw, ph, pw, dh, dw, op);
  const bool store = pool_check_indices(indices, output, g, p, op);
  check_device(input, Device::CPU, op, "input");
  if (output.numel() == 0) return;
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    dispatch_index(indices, store, [&](auto* ind, auto has) {
      using I = std::remove_pointer_t<decltype(ind)>;
      constexpr bool kIdx = decltype(has)::value;
      max_forward<T, I, kIdx>(input.ptr<T>(), output.ptr<T>(), ind, g, p);
    });
  });
}

void max_pool2d_backward_cpu(const TensorView& grad_output, const TensorView& indices,
                             const TensorView& grad_input, int64_t kh, int64_t kw, int64_t sh,
                             int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw) {
  const char* op = "max_pool2d_backward";
  const PoolGeometry g = pool_check_pair(grad_input, grad_output, op, "grad_input", "grad_output");
  const MaxPoolParams p = make_max_pool_params(g, kh, kw, sh, sw, ph, pw, dh, dw, op);
  PYNN_CHECK(pool_check_indices(indices, grad_output, g, p, op), op, ": indices are required");
  check_device(grad_input, Device::CPU, op, "grad_input");
  if (grad_input.numel() == 0) return;
  dispatch_floating(grad_output.dtype, op, "grad_output", [&](auto tag) {
    using T = decltype(tag);
    dispatch_index(indices, true, [&](auto* ind, auto) {
      using I = std::remove_pointer_t<decltype(ind)>;
      if (g.layout == PoolLayout::NCHW)
        max_backward_nchw<T, I>(grad_output.ptr<T>(), ind, grad_input.ptr<T>(), g, p, op);
      else
        max_backward_nhwc<T, I>(grad_output.ptr<T>(), ind, grad_input.ptr<T>(), g, p);
    });
  });
}

void avg_pool2d_forward_cpu(const TensorView& input, const TensorView& output, int64_t kh,
                            int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                            bool count_include_pad, int64_t divisor_override) {
  const char* op = "avg_pool2d_forward";
  const PoolGeometry g = pool_check_pair(input, output, op, "input", "output");
  const AvgPoolParams p =
      make_avg_pool_params(g, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, op);
  check_device(input, Device::CPU, op, "input");
  avg_forward(input, output, g, p, op);
}

void avg_pool2d_backward_cpu(const TensorView& grad_output, const TensorView& grad_input,
                             int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                             int64_t pw, bool count_include_pad, int64_t divisor_override) {
  const char* op = "avg_pool2d_backward";
  const PoolGeometry g = pool_check_pair(grad_input, grad_output, op, "grad_input", "grad_output");
  const AvgPoolParams p =
      make_avg_pool_params(g, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, op);
  check_device(grad_input, Device::CPU, op, "grad_input");
  avg_backward(grad_output, grad_input, g, p, op);
}

void adaptive_avg_pool2d_forward_cpu(const TensorView& input, const TensorView& output) {
  const char* op = "adaptive_avg_pool2d_forward";
  const PoolGeometry g = pool_check_pair(input, output, op, "input", "output");
  const AvgPoolParams p = make_adaptive_params(g, op);
  check_device(input, Device::CPU, op, "input");
  avg_forward(input, output, g, p, op);
}

void adaptive_avg_pool2d_backward_cpu(const TensorView& grad_output, const TensorView& grad_input) {
  const char* op = "adaptive_avg_pool2d_backward";
  const PoolGeometry g = pool_check_pair(grad_input, grad_output, op, "grad_input", "grad_output");
  const AvgPoolParams p = make_adaptive_params(g, op);
  check_device(grad_input, Device::CPU, op, "grad_input");
  avg_backward(grad_output, grad_input, g, p, op);
}

}  // namespace pynn
