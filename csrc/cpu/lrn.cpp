// LRN on the CPU. Two walks over the (N, C, P) view, both O(C) per pixel:
//  - planar (P has stride 1, NCHW): a block of pixels of one sample slides its window down the
//    channels together, so every step is a vector loop over contiguous pixels;
//  - per pixel (any other strides, channels last at its best): one pixel at a time.
// The hot loops are compiled for AVX-512, AVX2 and baseline x86-64 (target_clones).
#include "ops/lrn.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/dispatch.h"
#include "core/parallel.h"
#include "math/lrn.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PYNN_LRN_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PYNN_LRN_MULTIVERSION
#endif

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
constexpr int64_t kBackwardBytes = 96 * 1024;

template <class T>
inline int64_t backward_block(int64_t C, int64_t P) {
  int64_t b = kBackwardBytes / (C * int64_t(sizeof(double) + sizeof(T)));
  b = std::max<int64_t>(16, b / 16 * 16);
  return std::min(b, P);
}

inline std::vector<double>& scratch(size_t n) {
  thread_local std::vector<double> buf;
  if (buf.size() < n) buf.resize(n);
  return buf;
}

// Squares of one row of B pixels enter (w = +1) or leave (w = -1) the window.
template <class T>
inline void push_sq_row(const T* __restrict r, int64_t B, double* __restrict sum,
                        double* __restrict comp, double* __restrict nn, double* __restrict np,
                        double w) {
  constexpr bool kComp = std::is_same_v<T, double>;
  double dummy = 0.0;
  for (int64_t i = 0; i < B; ++i) {
    const double v = static_cast<double>(r[i]) * static_cast<double>(r[i]);
    lrn_window_push<kComp, false>(sum[i], comp[i], nn[i], np[i], dummy, v, w);
  }
}

// One row of gradient terms enters or leaves; st holds sum, comp, #nan, #+inf, #-inf rows.
template <bool kComp>
inline void push_t_row(const double* __restrict tr, int64_t B, double* st, double w) {
  double* __restrict sum = st;
  double* __restrict comp = st + B;
  double* __restrict nn = st + 2 * B;
  double* __restrict np = st + 3 * B;
  double* __restrict ng = st + 4 * B;
  for (int64_t i = 0; i < B; ++i)
    lrn_window_push<kComp, true>(sum[i], comp[i], nn[i], np[i], ng[i], tr[i], w);
}

template <class T, LrnPow K>
PYNN_LRN_MULTIVERSION void forward_planar(const T* x, int64_t xc, T* y, int64_t yc, T* s,
                                          int64_t sc, int64_t C, int64_t B, int64_t before,
                                          int64_t after, double coef, double k, T beta,
                                          double* ws) {
  double* sum = ws;
  double* comp = ws + B;
  double* nn = ws + 2 * B;
  double* np = ws + 3 * B;
  std::fill(ws, ws + 4 * B, 0.0);
  for (int64_t j = 0; j < std::min(after, C); ++j) push_sq_row(x + j * xc, B, sum, comp, nn, np, 1.0);
  for (int64_t c = 0; c < C; ++c) {
    if (c + after < C) push_sq_row(x + (c + after) * xc, B, sum, comp, nn, np, 1.0);
    if (c - before - 1 >= 0) push_sq_row(x + (c - before - 1) * xc, B, sum, comp, nn, np, -1.0);
    const T* __restrict xr = x + c * xc;
    T* __restrict yr = y + c * yc;
    if (s) {
      T* __restrict sr = s + c * sc;
      for (int64_t i = 0; i < B; ++i) {
        const T sv = lrn_scale<T>(lrn_window_value(sum[i], comp[i], nn[i], np[i], 0.0), coef, k);
        sr[i] = sv;
        yr[i] = xr[i] * lrn_pow_neg<K>(sv, beta);
      }
    } else {
      for (int64_t i = 0; i < B; ++i) {
        const T sv = lrn_scale<T>(lrn_window_value(sum[i], comp[i], nn[i], np[i], 0.0), coef, k);
        yr[i] = xr[i] * lrn_pow_neg<K>(sv, beta);
      }
    }
  }
}

// First every channel's t row and p row for the block, then the window slides over the t rows.
template <class T, LrnPow K>
PYNN_LRN_MULTIVERSION void backward_planar(const T* g, int64_t gc, const T* x, int64_t xc,
                                           const T* s, int64_t sc, T* gi, int64_t gic, int64_t C,
                                           int64_t B, int64_t before, int64_t after, double coef2,
                                           T beta, double* ws) {
  constexpr bool kComp = std::is_same_v<T, double>;
  double* t = ws;                                    // C * B
  T* p = reinterpret_cast<T*>(ws + C * B);           // C * B
  double* st = ws + C * B + (C * B * int64_t(sizeof(T)) + 7) / 8;  // 5 * B window state
  for (int64_t c = 0; c < C; ++c) {
    const T* __restrict gr = g + c * gc;
    const T* __restrict xr = x + c * xc;
    const T* __restrict sr = s + c * sc;
    double* __restrict tr = t + c * B;
    T* __restrict pr = p + c * B;
    for (int64_t i = 0; i < B; ++i) {
      const T pv = lrn_pow_neg<K>(sr[i], beta);
      pr[i] = pv;
      tr[i] = static_cast<double>(gr[i] * xr[i] * pv / sr[i]);
    }
  }
  double* __restrict sum = st;
  double* __restrict comp = st + B;
  double* __restrict nn = st + 2 * B;
  double* __restrict np = st + 3 * B;
  double* __restrict ng = st + 4 * B;
  std::fill(st, st + 5 * B, 0.0);
  for (int64_t c = 0; c < std::min(before, C); ++c) push_t_row<kComp>(t + c * B, B, st, 1.0);
  for (int64_t j = 0; j < C; ++j) {
    if (j + before < C) push_t_row<kComp>(t + (j + before) * B, B, st, 1.0);
    if (j - after - 1 >= 0) push_t_row<kComp>(t + (j - after - 1) * B, B, st, -1.0);
    const T* __restrict gr = g + j * gc;
    const T* __restrict xr = x + j * xc;
    const T* __restrict pr = p + j * B;
    T* __restrict out = gi + j * gic;
    for (int64_t i = 0; i < B; ++i)
      out[i] = lrn_grad_input<T>(gr[i], xr[i], pr[i],
                                 lrn_window_value(sum[i], comp[i], nn[i], np[i], ng[i]), coef2);
  }
}

template <class T, LrnPow K>
void forward_pixel(const T* x, int64_t xc, T* y, int64_t yc, T* s, int64_t sc, int64_t C,
                   int64_t before, int64_t after, double coef, double k, T beta) {
  constexpr bool kComp = std::is_same_v<T, double>;
  LrnWindow<kComp, false> win;
  auto sq = [&](int64_t j) { const double v = static_cast<double>(x[j * xc]); return v * v; };
  for (int64_t j = 0; j < std::min(after, C); ++j) win.push(sq(j), 1.0);
  for (int64_t c = 0; c < C; ++c) {
    if (c + after < C) win.push(sq(c + after), 1.0);
    if (c - before - 1 >= 0) win.push(sq(c - before - 1), -1.0);
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
  for (int64_t c = 0; c < std::min(before, C); ++c) win.push(t[c], 1.0);
  for (int64_t j = 0; j < C; ++j) {
    if (j + before < C) win.push(t[j + before], 1.0);
    if (j - after - 1 >= 0) win.push(t[j - after - 1], -1.0);
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
          double* ws = lrn_detail::scratch(4 * B).data();
          for (int64_t task = b0; task < b1; ++task) {
            const int64_t n = task / nblk, p0 = (task % nblk) * B, len = std::min(B, P - p0);
            lrn_detail::forward_planar<T, K>(x + n * xn + p0, xc, y + n * yn + p0, yc,
                                             s ? s + n * sn + p0 : nullptr, sc, C, len, before,
                                             after, coef, k, static_cast<T>(beta), ws);
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
        const size_t ws_len = size_t(C * B + (C * B * int64_t(sizeof(T)) + 7) / 8 + 5 * B);
        parallel_for(0, N * nblk, 1, [&](int64_t b0, int64_t b1) {
          double* ws = lrn_detail::scratch(ws_len).data();
          for (int64_t task = b0; task < b1; ++task) {
            const int64_t n = task / nblk, p0 = (task % nblk) * B, len = std::min(B, P - p0);
            lrn_detail::backward_planar<T, K>(
                g + n * st[0][0] + p0, st[0][1], x + n * st[1][0] + p0, st[1][1],
                s + n * st[2][0] + p0, st[2][1], gi + n * st[3][0] + p0, st[3][1], C, len,
                before, after, coef2, static_cast<T>(beta), ws);
          }
        });
      } else {
        const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1));
        parallel_for(0, N * P, grain, [&](int64_t b0, int64_t b1) {
          double* t = lrn_detail::scratch(size_t(C)).data();
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
