// LRN on the CPU. Walks over the (N, C, P) view, all O(C) per pixel:
//  - planar (P has stride 1, NCHW): a block of pixels of one sample slides its window down the
//    channels together, so every step is a vector loop over contiguous pixels;
//  - gathered (any other strides with P > 1, channels last): a block of pixels is copied into
//    channel rows, walked as planar, and copied back;
//  - per pixel (P == 1): one pixel at a time.
// The hot loops are compiled for AVX-512, AVX2 and baseline x86-64 (target_clones).
#include "ops/lrn.h"
#include "core/macros.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/dispatch.h"
#include "core/parallel.h"
#include "math/lrn.h"


// The row helpers are always inlined into the multiversioned block functions so that their
// loops get compiled for each clone's instruction set.

namespace pynn {

void lrn_check_forward(const TensorView& input, const TensorView& output,
                       const TensorView& scale, int64_t size, bool& write_scale) {
  const char* op = "local_response_norm";
  PYNN_CHECK(size >= 1, op, ": size must be >= 1, got ", size);
  check_dim(input, 3, op, "input");
  check_dim(output, 3, op, "output");
  check_same_dtype(input, output, op, "input", "output");
  check_same_device(input, output, op, "input", "output");
  check_same_shape(input, output, op, "input", "output");
  check_defined(input, op, "input");
  check_defined(output, op, "output");
  // An empty scale whose shape is not the input's means "inference: do not write it".
  bool same = scale.dim == 3;
  for (int d = 0; same && d < 3; ++d) same = scale.size(d) == input.size(d);
  write_scale = scale.numel() != 0 || same;
  if (write_scale) {
    check_dim(scale, 3, op, "scale");
    check_same_dtype(input, scale, op, "input", "scale");
    check_same_device(input, scale, op, "input", "scale");
    check_same_shape(input, scale, op, "input", "scale");
    check_defined(scale, op, "scale");
  }
}

void lrn_check_backward(const TensorView& grad_output, const TensorView& input,
                        const TensorView& scale, const TensorView& grad_input, int64_t size) {
  const char* op = "local_response_norm_backward";
  PYNN_CHECK(size >= 1, op, ": size must be >= 1, got ", size);
  const TensorView* ts[] = {&grad_output, &input, &scale, &grad_input};
  const char* names[] = {"grad_output", "input", "scale", "grad_input"};
  for (int i = 0; i < 4; ++i) {
    check_dim(*ts[i], 3, op, names[i]);
    check_defined(*ts[i], op, names[i]);
    if (i == 0) continue;
    check_same_dtype(grad_output, *ts[i], op, names[0], names[i]);
    check_same_device(grad_output, *ts[i], op, names[0], names[i]);
    check_same_shape(grad_output, *ts[i], op, names[0], names[i]);
  }
}

namespace lrn_detail {  // named: target_clones needs linkable symbols for its resolvers

// Pixels per planar block: the forward keeps 4 doubles of window state per pixel; the backward
// keeps a t row (double) and a p row (T) per channel, sized to stay in L2.
constexpr int64_t kForwardBlock = 512;
constexpr int64_t kBackwardBytes = 512 * 1024;

template <class T>
inline int64_t backward_block(int64_t C, int64_t P) {
  int64_t b = kBackwardBytes / ((C + 1) * int64_t(sizeof(double) + sizeof(T)));
  b = std::max<int64_t>(16, b / 16 * 16);
  return std::min(b, P);
}

inline bool all_finite(const double* sum, const double* comp, int64_t B) {
  bool ok = true;
  for (int64_t i = 0; i < B; ++i) ok &= std::isfinite(sum[i] + comp[i]);
  return ok;
}

// One channel of a planar forward block. Every pointer is a restrict parameter: GCC gives up
// on run-time alias checks beyond ten pointer pairs and would leave this loop scalar.
template <class T, LrnPow K, bool kWriteScale, bool kCounted>
PYNN_ALWAYS_INLINE void forward_row(const T* __restrict in, const T* __restrict out,
                              const T* __restrict xr, T* __restrict yr, T* __restrict sr,
                              double* __restrict sum, double* __restrict comp,
                              double* __restrict nn, double* __restrict np, int64_t B,
                              double coef, double k, T beta) {
  constexpr bool kComp = std::is_same_v<T, double>;
  for (int64_t i = 0; i < B; ++i) {
    double su = sum[i], co = kComp ? comp[i] : 0.0;
    const double ve = static_cast<double>(in[i]) * static_cast<double>(in[i]);
    const double vl = static_cast<double>(out[i]) * static_cast<double>(out[i]);
    double window;
    if constexpr (kCounted) {
      double a = nn[i], b = np[i], dummy = 0.0;
      lrn_window_slide<kComp, false>(su, co, a, b, dummy, ve, vl);
      nn[i] = a;
      np[i] = b;
      window = lrn_window_value(su, co, a, b, 0.0);
    } else {
      lrn_two_sum<kComp>(su, co, ve);
      lrn_two_sum<kComp>(su, co, -vl);
      window = su + co;
    }
    sum[i] = su;
    if constexpr (kComp) comp[i] = co;
    const T sv = lrn_scale<T>(window, coef, k);
    if constexpr (kWriteScale) sr[i] = sv;
    yr[i] = xr[i] * lrn_pow_neg<K>(sv, beta);
  }
}

// Planar forward for one block of B pixels. Per channel, one fused pass: the entering and the
// leaving row update the window state, then the output (and scale) row is written. Rows
// outside [0, C) are read from a row of zeros so the loop has no branches.
// kCounted = false is the fast walk: a plain running sum. A NaN or inf that enters it leaves
// the sum non-finite for good (inf - inf is NaN), so a finite sum at the end proves no
// window held one; otherwise it returns false and the caller reruns the block counted.
template <class T, LrnPow K, bool kWriteScale, bool kCounted>
PYNN_CPU_MULTIVERSION bool forward_planar(const T* x, int64_t xc, T* y, int64_t yc, T* s,
                                          int64_t sc, int64_t C, int64_t B, int64_t before,
                                          int64_t after, double coef, double k, T beta,
                                          double* ws) {
  constexpr bool kComp = std::is_same_v<T, double>;
  double* __restrict sum = ws;
  double* __restrict comp = ws + B;
  double* __restrict nn = ws + 2 * B;
  double* __restrict np = ws + 3 * B;
  T* zero = reinterpret_cast<T*>(ws + 4 * B);
  std::fill(ws, ws + 4 * B, 0.0);
  std::fill(zero, zero + B, T(0));
  for (int64_t j = 0; j < std::min(after, C); ++j) {
    const T* __restrict r = x + j * xc;
    for (int64_t i = 0; i < B; ++i) {
      double dummy = 0.0;
      const double v = static_cast<double>(r[i]) * static_cast<double>(r[i]);
      lrn_window_slide<kComp, false>(sum[i], comp[i], nn[i], np[i], dummy, v, 0.0);
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    const T* in = c + after < C ? x + (c + after) * xc : zero;
    const T* out = c - before - 1 >= 0 ? x + (c - before - 1) * xc : zero;
    forward_row<T, K, kWriteScale, kCounted>(in, out, x + c * xc, y + c * yc,
                                             kWriteScale ? s + c * sc : nullptr, sum, comp, nn,
                                             np, B, coef, k, beta);
  }
  return kCounted || all_finite(sum, comp, B);
}

template <bool kComp>
PYNN_ALWAYS_INLINE void backward_prime(const double* __restrict tr, double* st, int64_t B) {
  double* __restrict sum = st;
  double* __restrict comp = st + B;
  double* __restrict nn = st + 2 * B;
  double* __restrict np = st + 3 * B;
  double* __restrict ng = st + 4 * B;
  for (int64_t i = 0; i < B; ++i)
    lrn_window_slide<kComp, true>(sum[i], comp[i], nn[i], np[i], ng[i], tr[i], 0.0);
}

// One channel of a planar backward block (restrict parameters: see forward_row).
// st holds the window state rows: sum, comp, #nan, #+inf, #-inf.
template <class T, bool kCounted>
PYNN_ALWAYS_INLINE void backward_row(const double* __restrict in, const double* __restrict out,
                               const T* __restrict gr, const T* __restrict xr,
                               const T* __restrict pr, T* __restrict gir, double* st, int64_t B,
                               double coef2) {
  constexpr bool kComp = std::is_same_v<T, double>;
  double* __restrict sum = st;
  double* __restrict comp = st + B;
  double* __restrict nn = st + 2 * B;
  double* __restrict np = st + 3 * B;
  double* __restrict ng = st + 4 * B;
  for (int64_t i = 0; i < B; ++i) {
    double su = sum[i], co = kComp ? comp[i] : 0.0;
    double window;
    if constexpr (kCounted) {
      double a = nn[i], b = np[i], d = ng[i];
      lrn_window_slide<kComp, true>(su, co, a, b, d, in[i], out[i]);
      nn[i] = a;
      np[i] = b;
      ng[i] = d;
      window = lrn_window_value(su, co, a, b, d);
    } else {
      lrn_two_sum<kComp>(su, co, in[i]);
      lrn_two_sum<kComp>(su, co, -out[i]);
      window = su + co;
    }
    sum[i] = su;
    if constexpr (kComp) comp[i] = co;
    gir[i] = lrn_grad_input<T>(gr[i], xr[i], pr[i], window, coef2);
  }
}

// t_c and p_c = scale_c^-beta of one channel row.
template <class T, LrnPow K>
PYNN_ALWAYS_INLINE void backward_terms_row(const T* __restrict gr, const T* __restrict xr,
                                     const T* __restrict sr, double* __restrict tr,
                                     T* __restrict pr, int64_t B, T beta) {
  for (int64_t i = 0; i < B; ++i) {
    T pv, pos;
    lrn_pow_pair<K>(sr[i], beta, pv, pos);
    pr[i] = pv;
    tr[i] = static_cast<double>(gr[i] * xr[i] * pos);
  }
}

// The window over the t rows of a planar backward block, writing the grad rows; the fast walk
// (kCounted = false) reports a non-finite t as forward_planar does.
template <class T, bool kCounted>
PYNN_ALWAYS_INLINE bool backward_slide(const double* t, const T* p, const T* g, int64_t gc,
                                 const T* x, int64_t xc, T* gi, int64_t gic, int64_t C,
                                 int64_t B, int64_t before, int64_t after, double coef2,
                                 double* st) {
  constexpr bool kComp = std::is_same_v<T, double>;
  const double* zero = t + C * B;
  double* sum = st;
  double* comp = st + B;
  std::fill(st, st + 5 * B, 0.0);
  for (int64_t c = 0; c < std::min(before, C); ++c)
    backward_prime<kComp>(t + c * B, st, B);
  for (int64_t j = 0; j < C; ++j) {
    const double* in = j + before < C ? t + (j + before) * B : zero;
    const double* out = j - after - 1 >= 0 ? t + (j - after - 1) * B : zero;
    backward_row<T, kCounted>(in, out, g + j * gc, x + j * xc, p + j * B, gi + j * gic, st, B,
                              coef2);
  }
  return kCounted || all_finite(sum, comp, B);
}

// Workspace (in doubles) of backward_planar: C + 1 rows of t (the last one zeros), C rows of p,
// 5 rows of window state.
template <class T>
inline int64_t backward_ws(int64_t C, int64_t B) {
  return (C + 1) * B + (C * B * int64_t(sizeof(T)) + 7) / 8 + 5 * B;
}

// Planar backward for one block: every channel's t row and p row, then one fused pass per
// channel that slides the window over the t rows and writes the grad row.
template <class T, LrnPow K>
PYNN_CPU_MULTIVERSION void backward_planar(const T* g, int64_t gc, const T* x, int64_t xc,
                                           const T* s, int64_t sc, T* gi, int64_t gic, int64_t C,
                                           int64_t B, int64_t before, int64_t after, double coef2,
                                           T beta, double* ws) {
  double* t = ws;  // (C + 1) * B
  T* p = reinterpret_cast<T*>(ws + (C + 1) * B);
  double* st = ws + (C + 1) * B + (C * B * int64_t(sizeof(T)) + 7) / 8;
  for (int64_t c = 0; c < C; ++c)
    backward_terms_row<T, K>(g + c * gc, x + c * xc, s + c * sc, t + c * B, p + c * B, B, beta);
  std::fill(t + C * B, t + (C + 1) * B, 0.0);
  if (!backward_slide<T, false>(t, p, g, gc, x, xc, gi, gic, C, B, before, after, coef2, st))
    backward_slide<T, true>(t, p, g, gc, x, xc, gi, gic, C, B, before, after, coef2, st);
}

// Other layouts (channels last) go through the planar walk too: a block of pixels is gathered
// into channel rows in a buffer, walked, and the results scattered back. The copies stay in
// cache; the walk is then the same vectorised code as for NCHW.
constexpr int64_t kGatherBlock = 128;

// Pixels per gathered block: kGatherBlock, fewer when `copies` channel-row buffers of that
// many pixels would not fit the backward's L2 budget (very many channels).
template <class T>
inline int64_t gather_block(int64_t C, int64_t P, int64_t copies) {
  const int64_t fit = kBackwardBytes / (copies * C * int64_t(sizeof(T)));
  return std::min(std::max<int64_t>(16, std::min(kGatherBlock, fit)), P);
}

template <class T>
void gather_rows(const T* src, int64_t sc, int64_t sp, int64_t C, int64_t len, T* dst) {
  for (int64_t q = 0; q < len; ++q)
    for (int64_t c = 0; c < C; ++c) dst[c * len + q] = src[q * sp + c * sc];
}

template <class T>
void scatter_rows(const T* src, int64_t C, int64_t len, T* dst, int64_t dc, int64_t dp) {
  for (int64_t q = 0; q < len; ++q)
    for (int64_t c = 0; c < C; ++c) dst[q * dp + c * dc] = src[c * len + q];
}

// Doubles needed for n values of T.
template <class T>
inline int64_t doubles_for(int64_t n) {
  return (n * int64_t(sizeof(T)) + 7) / 8;
}

template <class T, LrnPow K>
void forward_pixel(const T* x, int64_t xc, T* y, int64_t yc, T* s, int64_t sc, int64_t C,
                   int64_t before, int64_t after, double coef, double k, T beta) {
  constexpr bool kComp = std::is_same_v<T, double>;
  LrnWindow<kComp, false> win;
  auto sq = [&](int64_t j) { const double v = static_cast<double>(x[j * xc]); return v * v; };
  for (int64_t j = 0; j < std::min(after, C); ++j) win.slide(sq(j), 0.0);
  for (int64_t c = 0; c < C; ++c) {
    win.slide(c + after < C ? sq(c + after) : 0.0, c - before - 1 >= 0 ? sq(c - before - 1) : 0.0);
    const T sv = lrn_scale<T>(win.value(), coef, k);
    if (s) s[c * sc] = sv;
    y[c * yc] = x[c * xc] * lrn_pow_neg<K>(sv, beta);
  }
}

template <class T, LrnPow K>
void backward_pixel(const T* g, int64_t gc, const T* x, int64_t xc, const T* s, int64_t sc,
                    T* gi, int64_t gic, int64_t C, int64_t before, int64_t after, double coef2,
                    T beta, double* t) {
  constexpr bool kComp = std::is_same_v<T, double>;
  for (int64_t c = 0; c < C; ++c)
    t[c] = lrn_grad_term<K, T>(g[c * gc], x[c * xc], s[c * sc], beta);
  LrnWindow<kComp, true> win;
  for (int64_t c = 0; c < std::min(before, C); ++c) win.slide(t[c], 0.0);
  for (int64_t j = 0; j < C; ++j) {
    win.slide(j + before < C ? t[j + before] : 0.0, j - after - 1 >= 0 ? t[j - after - 1] : 0.0);
    const T sj = s[j * sc];
    gi[j * gic] = lrn_grad_input<T>(g[j * gc], x[j * xc], lrn_pow_neg<K>(sj, beta), win.value(),
                                    coef2);
  }
}

}  // namespace lrn_detail

void lrn_forward_cpu(const TensorView& input, const TensorView& output, const TensorView& scale,
                     int64_t size, double alpha, double beta, double k) {
  const char* op = "local_response_norm";
  bool write_scale = false;
  lrn_check_forward(input, output, scale, size, write_scale);
  check_device(input, Device::CPU, op, "input");
  const int64_t N = input.size(0), C = input.size(1), P = input.size(2);
  if (input.numel() == 0) return;
  const int64_t before = size / 2, after = (size - 1) / 2;
  const double coef = alpha / static_cast<double>(size);
  const bool planar = P > 1 && input.stride(2) == 1 && output.stride(2) == 1 &&
                      (!write_scale || scale.stride(2) == 1);
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    dispatch_lrn_pow(beta, [&](auto pk) {
      constexpr LrnPow K = decltype(pk)::kind;
      const T* x = input.ptr<T>();
      T* y = output.ptr<T>();
      T* s = write_scale ? scale.ptr<T>() : nullptr;
      const int64_t xn = input.stride(0), xc = input.stride(1), xp = input.stride(2);
      const int64_t yn = output.stride(0), yc = output.stride(1), yp = output.stride(2);
      const int64_t sn = write_scale ? scale.stride(0) : 0, sc = write_scale ? scale.stride(1) : 0,
                    sp = write_scale ? scale.stride(2) : 0;
      if (planar) {
        const int64_t B = std::min(lrn_detail::kForwardBlock, P);
        const int64_t nblk = (P + B - 1) / B;
        parallel_for(0, N * nblk, 1, [&](int64_t b0, int64_t b1) {
          std::vector<double> buf(static_cast<size_t>(5 * B));  // per chunk, freed after the call
          double* ws = buf.data();
          for (int64_t task = b0; task < b1; ++task) {
            const int64_t n = task / nblk, p0 = (task % nblk) * B, len = std::min(B, P - p0);
            const T* xb = x + n * xn + p0;
            T* yb = y + n * yn + p0;
            T* sb = s ? s + n * sn + p0 : nullptr;
            const T bt = static_cast<T>(beta);
            using lrn_detail::forward_planar;
            // The fast walk first; a block that held a NaN or inf is redone counted.
            if (s) {
              if (!forward_planar<T, K, true, false>(xb, xc, yb, yc, sb, sc, C, len, before,
                                                     after, coef, k, bt, ws))
                forward_planar<T, K, true, true>(xb, xc, yb, yc, sb, sc, C, len, before, after,
                                                 coef, k, bt, ws);
            } else {
              if (!forward_planar<T, K, false, false>(xb, xc, yb, yc, sb, sc, C, len, before,
                                                      after, coef, k, bt, ws))
                forward_planar<T, K, false, true>(xb, xc, yb, yc, sb, sc, C, len, before,
                                                  after, coef, k, bt, ws);
            }
          }
        });
      } else if (P > 1) {
        using namespace lrn_detail;
        const int64_t B = gather_block<T>(C, P, 3);
        const int64_t nblk = (P + B - 1) / B;
        const int64_t cb = doubles_for<T>(C * B);
        parallel_for(0, N * nblk, 1, [&](int64_t b0, int64_t b1) {
          std::vector<double> buf(size_t(5 * B + 3 * cb));
          double* ws = buf.data();
          T* xt = reinterpret_cast<T*>(ws + 5 * B);
          T* yt = reinterpret_cast<T*>(ws + 5 * B + cb);
          T* stt = reinterpret_cast<T*>(ws + 5 * B + 2 * cb);
          const T bt = static_cast<T>(beta);
          for (int64_t task = b0; task < b1; ++task) {
            const int64_t n = task / nblk, p0 = (task % nblk) * B, len = std::min(B, P - p0);
            gather_rows(x + n * xn + p0 * xp, xc, xp, C, len, xt);
            if (!forward_planar<T, K, true, false>(xt, len, yt, len, stt, len, C, len, before,
                                                   after, coef, k, bt, ws))
              forward_planar<T, K, true, true>(xt, len, yt, len, stt, len, C, len, before, after,
                                               coef, k, bt, ws);
            scatter_rows(yt, C, len, y + n * yn + p0 * yp, yc, yp);
            if (s) scatter_rows(stt, C, len, s + n * sn + p0 * sp, sc, sp);
          }
        });
      } else {
        const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1));
        parallel_for(0, N * P, grain, [&](int64_t b0, int64_t b1) {
          for (int64_t i = b0; i < b1; ++i) {
            const int64_t n = i / P, q = i % P;
            lrn_detail::forward_pixel<T, K>(x + n * xn + q * xp, xc, y + n * yn + q * yp, yc,
                                            s ? s + n * sn + q * sp : nullptr, sc, C, before,
                                            after, coef, k, static_cast<T>(beta));
          }
        });
      }
    });
  });
}

void lrn_backward_cpu(const TensorView& grad_output, const TensorView& input,
                      const TensorView& scale, const TensorView& grad_input, int64_t size,
                      double alpha, double beta) {
  const char* op = "local_response_norm_backward";
  lrn_check_backward(grad_output, input, scale, grad_input, size);
  check_device(input, Device::CPU, op, "input");
  const int64_t N = input.size(0), C = input.size(1), P = input.size(2);
  if (input.numel() == 0) return;
  const int64_t before = size / 2, after = (size - 1) / 2;
  const double coef2 = 2.0 * alpha * beta / static_cast<double>(size);
  const bool planar = P > 1 && grad_output.stride(2) == 1 && input.stride(2) == 1 &&
                      scale.stride(2) == 1 && grad_input.stride(2) == 1;
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    dispatch_lrn_pow(beta, [&](auto pk) {
      constexpr LrnPow K = decltype(pk)::kind;
      const T* g = grad_output.ptr<T>();
      const T* x = input.ptr<T>();
      const T* s = scale.ptr<T>();
      T* gi = grad_input.ptr<T>();
      const TensorView* vs[] = {&grad_output, &input, &scale, &grad_input};
      int64_t st[4][3];
      for (int i = 0; i < 4; ++i)
        for (int d = 0; d < 3; ++d) st[i][d] = vs[i]->stride(d);
      if (planar) {
        const int64_t B = lrn_detail::backward_block<T>(C, P);
        const int64_t nblk = (P + B - 1) / B;
        const size_t ws_len = size_t(lrn_detail::backward_ws<T>(C, B));
        parallel_for(0, N * nblk, 1, [&](int64_t b0, int64_t b1) {
          std::vector<double> buf(ws_len);
          double* ws = buf.data();
          for (int64_t task = b0; task < b1; ++task) {
            const int64_t n = task / nblk, p0 = (task % nblk) * B, len = std::min(B, P - p0);
            lrn_detail::backward_planar<T, K>(
                g + n * st[0][0] + p0, st[0][1], x + n * st[1][0] + p0, st[1][1],
                s + n * st[2][0] + p0, st[2][1], gi + n * st[3][0] + p0, st[3][1], C, len,
                before, after, coef2, static_cast<T>(beta), ws);
          }
        });
      } else if (P > 1) {
        using namespace lrn_detail;
        const int64_t B = std::min(gather_block<T>(C, P, 4), backward_block<T>(C, P));
        const int64_t nblk = (P + B - 1) / B;
        const int64_t cb = doubles_for<T>(C * B), inner = backward_ws<T>(C, B);
        parallel_for(0, N * nblk, 1, [&](int64_t b0, int64_t b1) {
          std::vector<double> buf(size_t(inner + 4 * cb));
          double* ws = buf.data();
          T* gt = reinterpret_cast<T*>(ws + inner);
          T* xt = reinterpret_cast<T*>(ws + inner + cb);
          T* stt = reinterpret_cast<T*>(ws + inner + 2 * cb);
          T* it = reinterpret_cast<T*>(ws + inner + 3 * cb);
          for (int64_t task = b0; task < b1; ++task) {
            const int64_t n = task / nblk, p0 = (task % nblk) * B, len = std::min(B, P - p0);
            gather_rows(g + n * st[0][0] + p0 * st[0][2], st[0][1], st[0][2], C, len, gt);
            gather_rows(x + n * st[1][0] + p0 * st[1][2], st[1][1], st[1][2], C, len, xt);
            gather_rows(s + n * st[2][0] + p0 * st[2][2], st[2][1], st[2][2], C, len, stt);
            backward_planar<T, K>(gt, len, xt, len, stt, len, it, len, C, len, before, after,
                                  coef2, static_cast<T>(beta), ws);
            scatter_rows(it, C, len, gi + n * st[3][0] + p0 * st[3][2], st[3][1], st[3][2]);
          }
        });
      } else {
        const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1));
        parallel_for(0, N * P, grain, [&](int64_t b0, int64_t b1) {
          std::vector<double> buf(static_cast<size_t>(C));
          double* t = buf.data();
          for (int64_t i = b0; i < b1; ++i) {
            const int64_t n = i / P, q = i % P;
            auto at = [&](int k) { return n * st[k][0] + q * st[k][2]; };
            lrn_detail::backward_pixel<T, K>(g + at(0), st[0][1], x + at(1), st[1][1], s + at(2),
                                             st[2][1], gi + at(3), st[3][1], C, before, after,
                                             coef2, static_cast<T>(beta), t);
          }
        });
      }
    });
  });
}

}  // namespace pynn
