// Batch normalisation on the CPU. The (N, C, P) view is cut into tiles that fit in L2:
//  - planar (P has stride 1, NCHW): a tile is a run of one (n, c) plane;
//  - interleaved (C has stride 1 at best: channels last, (N, C)): a tile is a block of rows
//    (n, p), each row holding all C channels.
// A tile's moments come from two passes over it while it is in cache (mean, then squared
// deviations, in double); tiles merge per channel in a fixed order (Chan et al.), so results do
// not depend on the thread count. The hot loops are compiled for AVX-512, AVX2 and baseline.
#include "ops/batchnorm.h"
#include "core/macros.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/dispatch.h"
#include "core/parallel.h"
#include "math/batchnorm.h"


namespace pynn {

namespace {
void check_channel_vector(const OptView& t, const TensorView& ref, int64_t C, const char* op,
                          const char* arg, const char* ref_arg) {
  if (!t) return;
  check_defined(*t, op, arg);
  PYNN_CHECK(t->dim == 1 && t->size(0) == C, op, ": ", arg, " must be 1-D with ", C,
             " elements (one per channel), got shape ", t->shape_str());
  check_same_dtype(ref, *t, op, ref_arg, arg);
  check_same_device(ref, *t, op, ref_arg, arg);
}

void check_stats(const TensorView& t, const TensorView& ref, int64_t C, const char* op,
                 const char* arg) {
  check_defined(t, op, arg);
  PYNN_CHECK(t.dim == 1 && t.size(0) == C, op, ": ", arg, " must be 1-D with ", C,
             " elements, got shape ", t.shape_str());
  PYNN_CHECK_TYPE(t.dtype == DType::Float64, op, ": ", arg, " must be float64, got ",
                  dtype_name(t.dtype));
  check_same_device(ref, t, op, "input", arg);
}
}  // namespace

void batch_norm_check_forward(const TensorView& input, const OptView& weight, const OptView& bias,
                              const OptView& running_mean, const OptView& running_var,
                              const TensorView& output, const TensorView& save_mean,
                              const TensorView& save_invstd, bool training, double eps) {
  const char* op = "batch_norm";
  check_dim(input, 3, op, "input");
  check_defined(input, op, "input");
  check_dim(output, 3, op, "output");
  check_defined(output, op, "output");
  check_same_shape(input, output, op, "input", "output");
  check_same_dtype(input, output, op, "input", "output");
  check_same_device(input, output, op, "input", "output");
  const int64_t C = input.size(1);
  check_channel_vector(weight, input, C, op, "weight", "input");
  check_channel_vector(bias, input, C, op, "bias", "input");
  check_channel_vector(running_mean, input, C, op, "running_mean", "input");
  check_channel_vector(running_var, input, C, op, "running_var", "input");
  PYNN_CHECK(running_mean.has_value() == running_var.has_value(), op,
             ": running_mean and running_var must either both be None or neither be None");
  PYNN_CHECK(training || running_mean.has_value(), op,
             ": running_mean and running_var must be given in eval mode (training=False)");
  check_stats(save_mean, input, C, op, "save_mean");
  check_stats(save_invstd, input, C, op, "save_invstd");
  const int64_t M = input.size(0) * input.size(2);
  PYNN_CHECK(!training || M != 1, op,
             ": expected more than 1 value per channel when training, got input of shape ",
             input.shape_str(), " (N, C, spatial)");
  PYNN_CHECK(training ? eps > 0.0 : eps >= 0.0, op, ": eps must be ",
             training ? "positive during training" : "non-negative", ", got ", eps);
}

void batch_norm_check_backward(const TensorView& grad_output, const TensorView& input,
                               const OptView& weight, const TensorView& save_mean,
                               const TensorView& save_invstd, const OptView& grad_input,
                               const OptView& grad_weight, const OptView& grad_bias) {
  const char* op = "batch_norm_backward";
  check_dim(input, 3, op, "input");
  check_defined(input, op, "input");
  check_dim(grad_output, 3, op, "grad_output");
  check_defined(grad_output, op, "grad_output");
  check_same_shape(input, grad_output, op, "input", "grad_output");
  check_same_dtype(input, grad_output, op, "input", "grad_output");
  check_same_device(input, grad_output, op, "input", "grad_output");
  const int64_t C = input.size(1);
  if (grad_input) {
    check_dim(*grad_input, 3, op, "grad_input");
    check_defined(*grad_input, op, "grad_input");
    check_same_shape(input, *grad_input, op, "input", "grad_input");
    check_same_dtype(input, *grad_input, op, "input", "grad_input");
    check_same_device(input, *grad_input, op, "input", "grad_input");
  }
  check_channel_vector(weight, input, C, op, "weight", "input");
  check_channel_vector(grad_weight, input, C, op, "grad_weight", "input");
  check_channel_vector(grad_bias, input, C, op, "grad_bias", "input");
  check_stats(save_mean, input, C, op, "save_mean");
  check_stats(save_invstd, input, C, op, "save_invstd");
}

namespace bn_detail {  // named: target_clones needs linkable symbols for its resolvers

constexpr int64_t kTile = 16384;  // elements per tile (64 KiB of float32)
// Fewer elements than this per thread cost more in waking a worker than they save (small
// batches, (N, C) inputs), so the loops below hand out at least this much work per chunk.
constexpr int64_t kMinPerThread = 65536;

inline int64_t grain_for(int64_t elems_per_item) {
  return std::max<int64_t>(1, kMinPerThread / std::max<int64_t>(elems_per_item, 1));
}
constexpr int kLanes = 16;        // independent accumulators, so the sums vectorise

// The training statistics of C channels from their moments: a loop of its own, versioned per
// ISA, so that its divisions and square roots run as vectors (inline in the forward, as scalar
// x86-64 code, they took about 8 us of a 4 x 1024 BatchNorm1d call's 14).
PYNN_CPU_MULTIVERSION void train_stats(const BnMoments* __restrict mom, int64_t C, double eps,
                                       double* __restrict mean, double* __restrict invstd) {
  for (int64_t c = 0; c < C; ++c) {
    const BnStats s = bn_train_stats(mom[c], eps);
    mean[c] = s.mean;
    invstd[c] = s.invstd;
  }
}

// The eval statistics and the forward coefficients of C channels, likewise vectorised per ISA
// (a division and a square root per channel): as scalar x86-64 code they were part of the 12.8 us
// the kernel took for a 2 x 2048 x 1 x 1 input on a 2-core Xeon, 10.5 us now.
template <class T>
PYNN_CPU_MULTIVERSION void eval_stats(const T* __restrict rm, int64_t rm_s, const T* __restrict rv,
                                     int64_t rv_s, int64_t C, double eps, double* __restrict mean,
                                     double* __restrict invstd) {
  for (int64_t c = 0; c < C; ++c) {
    const BnStats s = bn_eval_stats(static_cast<double>(rm[c * rm_s]),
                                    static_cast<double>(rv[c * rv_s]), eps);
    mean[c] = s.mean;
    invstd[c] = s.invstd;
  }
}

// w / b null: 1 and 0 (strides then unused).
template <class T>
PYNN_CPU_MULTIVERSION void forward_coeffs(const double* __restrict mean,
                                         const double* __restrict invstd, const T* w, int64_t w_s,
                                         const T* b, int64_t b_s, int64_t C,
                                         BnForwardCoeffs<T>* __restrict k) {
  for (int64_t c = 0; c < C; ++c)
    k[c] = bn_forward_coeffs<T>(BnStats{mean[c], invstd[c]}, w ? w + c * w_s : nullptr,
                                b ? b + c * b_s : nullptr);
}

// Moments of n contiguous values: mean, then squared deviations from it.
template <class T>
PYNN_CPU_MULTIVERSION BnMoments run_moments(const T* __restrict x, int64_t n) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += static_cast<double>(x[i + j]);
  double s = 0.0;
  for (; i < n; ++i) s += static_cast<double>(x[i]);
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  const double mean = s / static_cast<double>(n);
  double sq[kLanes] = {};
  i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const double d = static_cast<double>(x[i + j]) - mean;
      sq[j] += d * d;
    }
  double m2 = 0.0;
  for (; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - mean;
    m2 += d * d;
  }
  for (int j = 0; j < kLanes; ++j) m2 += sq[j];
  return {static_cast<double>(n), mean, m2};
}

// sum dy and sum dy * (x - mean) over n contiguous values.
template <class T>
PYNN_CPU_MULTIVERSION void run_grad_sums(const T* __restrict dy, const T* __restrict x, int64_t n,
                                        double mean, double& sum_dy, double& sum_dy_xmu) {
  double a[kLanes] = {}, b[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const double g = static_cast<double>(dy[i + j]);
      a[j] += g;
      b[j] += g * (static_cast<double>(x[i + j]) - mean);
    }
  double sa = 0.0, sb = 0.0;
  for (; i < n; ++i) {
    const double g = static_cast<double>(dy[i]);
    sa += g;
    sb += g * (static_cast<double>(x[i]) - mean);
  }
  for (int j = 0; j < kLanes; ++j) {
    sa += a[j];
    sb += b[j];
  }
  sum_dy += sa;
  sum_dy_xmu += sb;
}

// Planar layouts: planes [i0, i1) of the N x C planes (n, c), i = n * C + c, each P contiguous
// values (plane (n, c) of a tensor at n * stride_n + c * stride_c). One call walks the whole
// range, instead of a call and a division for (n, c) per plane: with ResNet-50's 7 x 7 planes
// (2 x 2048 x 7 x 7, eval) the layer took 0.955 of the time (ab.py, 9 of 15 rounds).
struct Planes {
  int64_t i0, i1, C, P;
};

template <class T>
PYNN_CPU_MULTIVERSION void planes_forward(Planes r, const T* __restrict x, int64_t xn, int64_t xc,
                                         T* __restrict y, int64_t yn, int64_t yc,
                                         const BnForwardCoeffs<T>* __restrict k) {
  int64_t n = r.i0 / r.C, c = r.i0 % r.C;
  for (int64_t i = r.i0; i < r.i1; ++i) {
    const BnForwardCoeffs<T> kc = k[c];
    const T* __restrict xs = x + n * xn + c * xc;
    T* __restrict ys = y + n * yn + c * yc;
    for (int64_t p = 0; p < r.P; ++p) ys[p] = bn_forward(xs[p], kc);
    if (++c == r.C) c = 0, ++n;
  }
}

template <class T>
PYNN_CPU_MULTIVERSION void planes_backward(Planes r, const T* __restrict dy, int64_t gn,
                                          int64_t gc, const T* __restrict x, int64_t xn,
                                          int64_t xc, T* __restrict dx, int64_t dn, int64_t dc,
                                          const BnBackwardCoeffs<T>* __restrict k) {
  int64_t n = r.i0 / r.C, c = r.i0 % r.C;
  for (int64_t i = r.i0; i < r.i1; ++i) {
    const BnBackwardCoeffs<T> kc = k[c];
    const T* __restrict gs = dy + n * gn + c * gc;
    const T* __restrict xs = x + n * xn + c * xc;
    T* __restrict ds = dx + n * dn + c * dc;
    for (int64_t p = 0; p < r.P; ++p) ds[p] = bn_backward_input(gs[p], xs[p], kc);
    if (++c == r.C) c = 0, ++n;
  }
}

// Interleaved rows: a run of `rows` rows (r-th at base + r * row stride), channels along a
// stride (kUnit: stride 1). Each function walks its rows itself: a channels_last tensor has
// ~100k rows of a few dozen channels, and a call per row cost about as much as the row's work.

// Per-channel sums of d = x - shift and d^2, shift being a value of the channel (its first
// row's): in double, and with the data's offset taken out first, var = (sum d^2 - (sum d)^2 / n)
// / n cancels nothing that matters, and partial sums merge by addition.
template <class T, bool kUnit>
PYNN_CPU_MULTIVERSION void rows_shifted_sums(const T* __restrict x, int64_t xr, int64_t sc,
                                            int64_t rows, int64_t C,
                                            const double* __restrict shift,
                                            double* __restrict sum, double* __restrict sq) {
  for (int64_t r = 0; r < rows; ++r, x += xr)
    for (int64_t c = 0; c < C; ++c) {
      const double d = static_cast<double>(x[kUnit ? c : c * sc]) - shift[c];
      sum[c] += d;
      sq[c] += d * d;
    }
}

template <class T, bool kUnit>
PYNN_CPU_MULTIVERSION void rows_grad_sums(const T* __restrict dy, int64_t dr, int64_t sdc,
                                         const T* __restrict x, int64_t xr, int64_t sxc,
                                         int64_t rows, int64_t C, const double* __restrict mean,
                                         double* __restrict a, double* __restrict b) {
  for (int64_t r = 0; r < rows; ++r, dy += dr, x += xr)
    for (int64_t c = 0; c < C; ++c) {
      const double g = static_cast<double>(dy[kUnit ? c : c * sdc]);
      a[c] += g;
      b[c] += g * (static_cast<double>(x[kUnit ? c : c * sxc]) - mean[c]);
    }
}

// Per-channel coefficients in structure-of-arrays form so a row vectorises over channels.
template <class T>
struct ChannelArrays {
  std::vector<T> hi, lo, a, b, c;
  explicit ChannelArrays(int64_t C) : hi(C), lo(C), a(C), b(C), c(C) {}
};

template <class T, bool kUnit>
PYNN_CPU_MULTIVERSION void rows_forward(const T* __restrict x, int64_t xr, int64_t sxc,
                                       T* __restrict y, int64_t yr, int64_t syc, int64_t rows,
                                       int64_t C, const T* __restrict hi, const T* __restrict lo,
                                       const T* __restrict scale, const T* __restrict shift) {
  for (int64_t r = 0; r < rows; ++r, x += xr, y += yr)
    for (int64_t c = 0; c < C; ++c)
      y[kUnit ? c : c * syc] = ((x[kUnit ? c : c * sxc] - hi[c]) - lo[c]) * scale[c] + shift[c];
}

template <class T, bool kUnit>
PYNN_CPU_MULTIVERSION void rows_backward(const T* __restrict dy, int64_t dr, int64_t sdc,
                                        const T* __restrict x, int64_t xr, int64_t sxc,
                                        T* __restrict dx, int64_t gr, int64_t sgc, int64_t rows,
                                        int64_t C, const T* __restrict hi,
                                        const T* __restrict lo, const T* __restrict k_dy,
                                        const T* __restrict k_xmu, const T* __restrict k_0) {
  for (int64_t r = 0; r < rows; ++r, dy += dr, x += xr, dx += gr)
    for (int64_t c = 0; c < C; ++c) {
      const T xmu = (x[kUnit ? c : c * sxc] - hi[c]) - lo[c];
      dx[kUnit ? c : c * sgc] = dy[kUnit ? c : c * sdc] * k_dy[c] + (xmu * k_xmu[c] + k_0[c]);
    }
}

// f(n, p, count) for the rows [r0, r1) of the N * P rows (n, p), one call per run of evenly
// strided rows: the rows of one sample, stepped by the p stride, or with P == 1 ((N, C) input)
// all of them at once, stepped by the n stride (run_stride gives the stride to pass).
inline int64_t run_stride(int64_t n_stride, int64_t p_stride, int64_t P) {
  return P == 1 ? n_stride : p_stride;
}

template <class F>
void for_row_runs(int64_t r0, int64_t r1, int64_t P, F&& f) {
  if (P == 1) {
    if (r0 < r1) f(r0, int64_t(0), r1 - r0);
    return;
  }
  while (r0 < r1) {
    const int64_t n = r0 / P, p = r0 % P, count = std::min(r1 - r0, P - p);
    f(n, p, count);
    r0 += count;
  }
}

struct Layout {
  int64_t N, C, P;
  bool planar;  // P has stride 1 in every big tensor
  bool unit;    // otherwise: C has stride 1 in every big tensor
};

inline Layout layout_of(std::initializer_list<const TensorView*> ts) {
  const TensorView& x = **ts.begin();
  Layout l{x.size(0), x.size(1), x.size(2), x.size(2) > 1, true};
  for (const TensorView* t : ts) {
    l.planar = l.planar && t->stride(2) == 1;
    l.unit = l.unit && (t->stride(1) == 1 || l.C == 1);
  }
  return l;
}

// Per-channel sums over the rows of an interleaved layout (row r = (n, p), the channels along a
// stride): add_rows(r0, r1, c0, c1, a, b) adds channels [c0, c1) of rows [r0, r1) into a[c] and
// b[c] (arrays indexed by channel). The work goes out as (row chunk, channel block) tasks: a
// block's two accumulators stay in L1 over all rows of a chunk, and the partial sums are one
// pair of C arrays per chunk, added up in chunk order. The split depends on the shape alone, so
// the sums are the same for any thread count. (Partials per tile of 16384 elements, as before,
// came to rows * C^2 / 8192 doubles: 64 MiB for a 4096 x 4096 input, 2.5x slower than torch.)
constexpr int64_t kChannelBlock = 256;
constexpr int64_t kMaxRowChunks = 16;

template <class AddRows>
void interleaved_sums(int64_t rows, int64_t C, const AddRows& add_rows, double* out_a,
                      double* out_b) {
  std::fill(out_a, out_a + C, 0.0);
  std::fill(out_b, out_b + C, 0.0);
  if (rows == 0 || C == 0) return;
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  const int64_t chunks =
      std::clamp<int64_t>(rows * C / kMinPerThread, 1, std::min(rows, kMaxRowChunks));
  const int64_t chunk_rows = (rows + chunks - 1) / chunks;
  std::vector<double> ws(size_t((chunks - 1) * C * 2), 0.0);  // chunk 0 sums into out_a/out_b
  const int64_t per_task = chunk_rows * std::min(C, kChannelBlock);
  parallel_for(0, chunks * blocks, grain_for(per_task), [&](int64_t b, int64_t e) {
    for (int64_t task = b; task < e; ++task) {
      const int64_t i = task / blocks, c0 = (task % blocks) * kChannelBlock;
      const int64_t c1 = std::min(C, c0 + kChannelBlock);
      double* a = i == 0 ? out_a : ws.data() + (i - 1) * C * 2;
      double* s = i == 0 ? out_b : a + C;
      add_rows(i * chunk_rows, std::min(rows, (i + 1) * chunk_rows), c0, c1, a, s);
    }
  });
  for (int64_t i = 1; i < chunks; ++i) {
    const double* a = ws.data() + (i - 1) * C * 2;
    for (int64_t c = 0; c < C; ++c) {
      out_a[c] += a[c];
      out_b[c] += a[C + c];
    }
  }
}

// Per-channel moments of x into `out` (C of them).
template <class T>
void channel_moments(const TensorView& input, const Layout& l, std::vector<BnMoments>& out) {
  const T* x = input.ptr<T>();
  const int64_t sn = input.stride(0), sc = input.stride(1), sp = input.stride(2);
  const int64_t N = l.N, C = l.C, P = l.P;
  out.assign(C, BnMoments{});
  if (l.planar) {
    // tiles[c * N + n]: the (n, c) plane, itself merged from runs of kTile.
    std::vector<BnMoments> tiles(size_t(N * C));
    parallel_for(0, N * C, grain_for(P), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t c = i / N, n = i % N;
        const T* plane = x + n * sn + c * sc;
        BnMoments m{};
        for (int64_t p0 = 0; p0 < P; p0 += kTile)
          m = bn_merge(m, run_moments(plane + p0, std::min(kTile, P - p0)));
        tiles[size_t(i)] = m;
      }
    });
    for (int64_t c = 0; c < C; ++c)
      for (int64_t n = 0; n < N; ++n)
        out[size_t(c)] = bn_merge(out[size_t(c)], tiles[size_t(c * N + n)]);
    return;
  }
  // One pass of sums shifted by each channel's first value (rows_shifted_sums).
  const int64_t rows = N * P;
  if (rows == 0) return;
  std::vector<double> shift(static_cast<size_t>(C)), sum(shift.size()), sq(shift.size());
  for (int64_t c = 0; c < C; ++c) shift[size_t(c)] = static_cast<double>(x[c * sc]);
  const int64_t rs = run_stride(sn, sp, P);
  interleaved_sums(rows, C, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1, double* a,
                               double* b) {
    for_row_runs(r0, r1, P, [&](int64_t n, int64_t p, int64_t count) {
      const T* row = x + n * sn + p * sp + c0 * sc;
      const double* sh = shift.data() + c0;
      if (l.unit) rows_shifted_sums<T, true>(row, rs, sc, count, c1 - c0, sh, a + c0, b + c0);
      else rows_shifted_sums<T, false>(row, rs, sc, count, c1 - c0, sh, a + c0, b + c0);
    });
  }, sum.data(), sq.data());
  const double n = static_cast<double>(rows);
  for (int64_t c = 0; c < C; ++c) {
    const double s = sum[size_t(c)], q = sq[size_t(c)];
    out[size_t(c)] = BnMoments{n, shift[size_t(c)] + s / n, std::max(0.0, q - s * s / n)};
  }
}

// Per-channel sum dy and sum dy * (x - mean).
template <class T>
void channel_grad_sums(const TensorView& grad_output, const TensorView& input, const Layout& l,
                       const double* mean, std::vector<double>& sum_dy,
                       std::vector<double>& sum_dy_xmu) {
  const T* dy = grad_output.ptr<T>();
  const T* x = input.ptr<T>();
  const int64_t N = l.N, C = l.C, P = l.P;
  const int64_t gn = grad_output.stride(0), gc = grad_output.stride(1), gp = grad_output.stride(2);
  const int64_t xn = input.stride(0), xc = input.stride(1), xp = input.stride(2);
  sum_dy.assign(size_t(C), 0.0);
  sum_dy_xmu.assign(size_t(C), 0.0);
  if (l.planar) {
    std::vector<double> tiles(size_t(N * C * 2));
    parallel_for(0, N * C, grain_for(P), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t c = i / N, n = i % N;
        double a = 0.0, s = 0.0;
        run_grad_sums(dy + n * gn + c * gc, x + n * xn + c * xc, P, mean[c], a, s);
        tiles[size_t(2 * i)] = a;
        tiles[size_t(2 * i + 1)] = s;
      }
    });
    for (int64_t c = 0; c < C; ++c)
      for (int64_t n = 0; n < N; ++n) {
        sum_dy[size_t(c)] += tiles[size_t(2 * (c * N + n))];
        sum_dy_xmu[size_t(c)] += tiles[size_t(2 * (c * N + n) + 1)];
      }
    return;
  }
  const int64_t gs = run_stride(gn, gp, P), xs = run_stride(xn, xp, P);
  interleaved_sums(N * P, C, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1, double* a,
                                double* s) {
    for_row_runs(r0, r1, P, [&](int64_t n, int64_t p, int64_t count) {
      const T* dr = dy + n * gn + p * gp + c0 * gc;
      const T* xr = x + n * xn + p * xp + c0 * xc;
      const int64_t cb = c1 - c0;
      if (l.unit)
        rows_grad_sums<T, true>(dr, gs, gc, xr, xs, xc, count, cb, mean + c0, a + c0, s + c0);
      else
        rows_grad_sums<T, false>(dr, gs, gc, xr, xs, xc, count, cb, mean + c0, a + c0, s + c0);
    });
  }, sum_dy.data(), sum_dy_xmu.data());
}

}  // namespace bn_detail

void batch_norm_forward_cpu(const TensorView& input, const OptView& weight, const OptView& bias,
                            const OptView& running_mean, const OptView& running_var,
                            const TensorView& output, const TensorView& save_mean,
                            const TensorView& save_invstd, const TensorView& workspace,
                            bool training, double momentum, double eps) {
  using namespace bn_detail;
  const char* op = "batch_norm";
  batch_norm_check_forward(input, weight, bias, running_mean, running_var, output, save_mean,
                           save_invstd, training, eps);
  check_device(input, Device::CPU, op, "input");
  const Layout l = layout_of({&input, &output});
  const int64_t C = l.C;
  double* smean = save_mean.ptr<double>();
  double* sinv = save_invstd.ptr<double>();
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    T* rm = running_mean ? running_mean->ptr<T>() : nullptr;
    T* rv = running_var ? running_var->ptr<T>() : nullptr;
    const T* w = weight ? weight->ptr<T>() : nullptr;
    const T* b = bias ? bias->ptr<T>() : nullptr;
    if (training) {
      std::vector<BnMoments> mom;
      channel_moments<T>(input, l, mom);
      train_stats(mom.data(), C, eps, smean, sinv);
      if (rm || rv)
        for (int64_t c = 0; c < C; ++c)
          bn_update_running<T>(rm ? rm + c * running_mean->stride(0) : nullptr,
                               rv ? rv + c * running_var->stride(0) : nullptr, mom[size_t(c)],
                               momentum);
    } else {
      eval_stats(rm, running_mean->stride(0), rv, running_var->stride(0), C, eps, smean, sinv);
    }
    if (input.numel() == 0) return;
    std::vector<BnForwardCoeffs<T>> k(static_cast<size_t>(C));
    forward_coeffs(smean, sinv, w, w ? weight->stride(0) : 0, b, b ? bias->stride(0) : 0, C,
                   k.data());
    const T* x = input.ptr<T>();
    T* y = output.ptr<T>();
    const int64_t N = l.N, P = l.P;
    const int64_t xn = input.stride(0), xc = input.stride(1), xp = input.stride(2);
    const int64_t yn = output.stride(0), yc = output.stride(1), yp = output.stride(2);
    if (l.planar) {
      parallel_for(0, N * C, grain_for(P), [&](int64_t b0, int64_t b1) {
        planes_forward(Planes{b0, b1, C, P}, x, xn, xc, y, yn, yc, k.data());
      });
      return;
    }
    ChannelArrays<T> a(C);
    for (int64_t c = 0; c < C; ++c) {
      a.hi[size_t(c)] = k[size_t(c)].center.hi;
      a.lo[size_t(c)] = k[size_t(c)].center.lo;
      a.a[size_t(c)] = k[size_t(c)].scale;
      a.b[size_t(c)] = k[size_t(c)].shift;
    }
    const int64_t xs = run_stride(xn, xp, P), ys = run_stride(yn, yp, P);
    parallel_for(0, N * P, grain_for(C), [&](int64_t r0, int64_t r1) {
      for_row_runs(r0, r1, P, [&](int64_t n, int64_t p, int64_t count) {
        const T* xr = x + n * xn + p * xp;
        T* yr = y + n * yn + p * yp;
        if (l.unit)
          rows_forward<T, true>(xr, xs, xc, yr, ys, yc, count, C, a.hi.data(), a.lo.data(),
                                a.a.data(), a.b.data());
        else
          rows_forward<T, false>(xr, xs, xc, yr, ys, yc, count, C, a.hi.data(), a.lo.data(),
                                 a.a.data(), a.b.data());
      });
    });
  });
}

void batch_norm_backward_cpu(const TensorView& grad_output, const TensorView& input,
                             const OptView& weight, const TensorView& save_mean,
                             const TensorView& save_invstd, const OptView& grad_input,
                             const OptView& grad_weight, const OptView& grad_bias,
                             const TensorView& workspace, bool training) {
  using namespace bn_detail;
  const char* op = "batch_norm_backward";
  batch_norm_check_backward(grad_output, input, weight, save_mean, save_invstd, grad_input,
                            grad_weight, grad_bias);
  check_device(input, Device::CPU, op, "input");
  const Layout l = grad_input ? layout_of({&input, &grad_output, &*grad_input})
                              : layout_of({&input, &grad_output});
  const int64_t C = l.C;
  const double* smean = save_mean.ptr<double>();
  const double* sinv = save_invstd.ptr<double>();
  const double count = static_cast<double>(l.N * l.P);
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    const T* w = weight ? weight->ptr<T>() : nullptr;
    const bool need_sums = grad_weight || grad_bias || (grad_input && training);
    std::vector<double> sum_dy, sum_dy_xmu;
    if (need_sums) {
      channel_grad_sums<T>(grad_output, input, l, smean, sum_dy, sum_dy_xmu);
      for (int64_t c = 0; c < C; ++c) {
        if (grad_weight)
          grad_weight->ptr<T>()[c * grad_weight->stride(0)] =
              static_cast<T>(sum_dy_xmu[size_t(c)] * sinv[c]);
        if (grad_bias)
          grad_bias->ptr<T>()[c * grad_bias->stride(0)] = static_cast<T>(sum_dy[size_t(c)]);
      }
    }
    if (!grad_input || input.numel() == 0) return;
    std::vector<BnBackwardCoeffs<T>> k(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c)
      k[size_t(c)] = bn_backward_coeffs<T>(
          BnStats{smean[c], sinv[c]}, w ? w + c * weight->stride(0) : nullptr,
          need_sums ? sum_dy[size_t(c)] : 0.0, need_sums ? sum_dy_xmu[size_t(c)] : 0.0, count,
          training);
    const T* dy = grad_output.ptr<T>();
    const T* x = input.ptr<T>();
    T* dx = grad_input->ptr<T>();
    const int64_t N = l.N, P = l.P;
    const int64_t gn = grad_output.stride(0), gc = grad_output.stride(1),
                  gp = grad_output.stride(2);
    const int64_t xn = input.stride(0), xc = input.stride(1), xp = input.stride(2);
    const int64_t dn = grad_input->stride(0), dc = grad_input->stride(1),
                  dp = grad_input->stride(2);
    if (l.planar) {
      parallel_for(0, N * C, grain_for(P), [&](int64_t b0, int64_t b1) {
        planes_backward(Planes{b0, b1, C, P}, dy, gn, gc, x, xn, xc, dx, dn, dc, k.data());
      });
      return;
    }
    ChannelArrays<T> a(C);
    for (int64_t c = 0; c < C; ++c) {
      a.hi[size_t(c)] = k[size_t(c)].center.hi;
      a.lo[size_t(c)] = k[size_t(c)].center.lo;
      a.a[size_t(c)] = k[size_t(c)].k_dy;
      a.b[size_t(c)] = k[size_t(c)].k_xmu;
      a.c[size_t(c)] = k[size_t(c)].k_0;
    }
    const int64_t gs = run_stride(gn, gp, P), xs = run_stride(xn, xp, P);
    const int64_t ds = run_stride(dn, dp, P);
    parallel_for(0, N * P, grain_for(C), [&](int64_t r0, int64_t r1) {
      for_row_runs(r0, r1, P, [&](int64_t n, int64_t p, int64_t count) {
        const T* gr = dy + n * gn + p * gp;
        const T* xr = x + n * xn + p * xp;
        T* dr = dx + n * dn + p * dp;
        if (l.unit)
          rows_backward<T, true>(gr, gs, gc, xr, xs, xc, dr, ds, dc, count, C, a.hi.data(),
                                 a.lo.data(), a.a.data(), a.b.data(), a.c.data());
        else
          rows_backward<T, false>(gr, gs, gc, xr, xs, xc, dr, ds, dc, count, C, a.hi.data(),
                                  a.lo.data(), a.a.data(), a.b.data(), a.c.data());
      });
    });
  });
}

}  // namespace pynn
