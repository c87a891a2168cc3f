#include "ops/loss.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/dispatch.h"
#include "core/parallel.h"
#include "cpu/exp.h"
#include "cpu/lane_sum.h"
#include "cpu/row_reduce.h"
#include "cpu/softmax_rows.h"
#include "math/loss.h"
#include "math/softmax.h"

namespace pynn {

// ---------------------------------------------------------------- argument checks (shared)

void check_reduction(int reduction, const char* op) {
  PYNN_CHECK(reduction >= 0 && reduction <= 2, op, ": reduction must be 0 (none), 1 (mean) or ",
             "2 (sum), got ", reduction);
}

namespace {
void check_like(const TensorView& ref, const TensorView& t, const char* op, const char* ref_name,
                const char* name) {
  check_defined(t, op, name);
  check_same_dtype(ref, t, op, ref_name, name);
  check_same_device(ref, t, op, ref_name, name);
  check_contiguous(t, op, name);
}

void check_stats(const TensorView& ref, const TensorView& stats, int64_t need, const char* op) {
  check_defined(stats, op, "stats");
  check_same_device(ref, stats, op, "input", "stats");
  PYNN_CHECK_TYPE(stats.dtype == DType::Float64, op, ": stats must be float64, got ",
                  dtype_name(stats.dtype));
  PYNN_CHECK(stats.numel() >= need && stats.is_contiguous(), op, ": stats must be contiguous ",
             "with at least ", need, " elements");
}

// The reduced output (and a reduced grad_output) is a single element.
void check_out(const TensorView& ref, const TensorView& out, int reduction, int64_t none_numel,
               const char* op, const char* name) {
  check_like(ref, out, op, "input", name);
  if (reduction == 0)
    PYNN_CHECK(out.numel() == none_numel, op, ": ", name, " must have ", none_numel,
               " elements for reduction='none', got shape ", out.shape_str());
  else
    PYNN_CHECK(out.numel() == 1, op, ": ", name, " must have one element for a reduced loss, ",
               "got shape ", out.shape_str());
}

// Fixed-size blocks of work whose partial sums are added in block order, so a reduced loss does
// not depend on the number of threads.
template <class F>
void reduce_blocks(int64_t items, int64_t block, int slots, double* out, F&& f) {
  const int64_t blocks = (items + block - 1) / block;
  std::vector<double> partial(static_cast<size_t>(blocks * slots), 0.0);
  parallel_for(0, blocks, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k)
      f(k * block, std::min(items, (k + 1) * block), partial.data() + k * slots);
  });
  for (int s = 0; s < slots; ++s) out[s] = 0.0;
  for (int64_t k = 0; k < blocks; ++k)
    for (int s = 0; s < slots; ++s) out[s] += partial[k * slots + s];
}

constexpr int64_t kGrainElems = 16384;

// ---- MSE blocks, versioned per ISA ----

// acc = {sum of w[i] * (x[i] - t[i])^2, sum of w[i]} (w null: weight 1) over the block.
template <bool HasW, class T>
PYNN_ALWAYS_INLINE void mse_sums_impl(const T* __restrict x, const T* __restrict t,
                                      const T* __restrict w, int64_t n, double* acc) {
  constexpr int kLanes = 16;
  acc[0] = cpu::lane_sum<kLanes>(n, [&](int64_t i) {
    const double se = static_cast<double>(mse_term(x[i], t[i]));
    return HasW ? static_cast<double>(w[i]) * se : se;
  });
  acc[1] = HasW ? cpu::lane_sum<kLanes>(n, [&](int64_t i) { return w[i]; })
                : static_cast<double>(n);
}

// go: the gradient of each element's loss term (g[i] for reduction none, else go_all); gw
// subtracts `centre` from each term (a weighted mean's denominator moves with the weight).
template <bool PerElement, bool HasW, class T>
PYNN_ALWAYS_INLINE void mse_grad_impl(const T* __restrict x, const T* __restrict t,
                                      const T* __restrict w, const T* __restrict g, T go_all,
                                      T centre, int64_t n, T* __restrict gx, T* __restrict gt,
                                      T* __restrict gw) {
  for (int64_t i = 0; i < n; ++i) {
    const T go = PerElement ? g[i] : go_all;
    const T gxi = mse_grad(x[i], t[i], HasW ? go * w[i] : go);
    if (gx) gx[i] = gxi;
    if (gt) gt[i] = -gxi;
    if (gw) gw[i] = go * (mse_term(x[i], t[i]) - centre);
  }
}

#define PYNN_MSE_BLOCKS(T)                                                                       \
  PYNN_CPU_MULTIVERSION void mse_sums(const T* x, const T* t, const T* w, int64_t n,             \
                                      double* acc) {                                             \
    if (w) mse_sums_impl<true>(x, t, w, n, acc);                                                 \
    else mse_sums_impl<false>(x, t, w, n, acc);                                                  \
  }                                                                                              \
  PYNN_CPU_MULTIVERSION void mse_grads(const T* x, const T* t, const T* w, const T* g,           \
                                       T go_all, T centre, int64_t n, T* gx, T* gt, T* gw) {     \
    if (g && w) mse_grad_impl<true, true>(x, t, w, g, go_all, centre, n, gx, gt, gw);            \
    else if (g) mse_grad_impl<true, false>(x, t, w, g, go_all, centre, n, gx, gt, gw);           \
    else if (w) mse_grad_impl<false, true>(x, t, w, g, go_all, centre, n, gx, gt, gw);           \
    else mse_grad_impl<false, false>(x, t, w, g, go_all, centre, n, gx, gt, gw);                 \
  }
PYNN_MSE_BLOCKS(float)
PYNN_MSE_BLOCKS(double)
#undef PYNN_MSE_BLOCKS
}  // namespace

MseShape mse_check(const TensorView& input, const TensorView& target, const OptView& weight,
                   const TensorView& out, const TensorView& stats, int reduction, const char* op,
                   const char* out_name) {
  check_reduction(reduction, op);
  check_defined(input, op, "input");
  check_contiguous(input, op, "input");
  check_like(input, target, op, "input", "target");
  check_same_shape(input, target, op, "input", "target");
  if (weight) {
    check_like(input, *weight, op, "input", "weight");
    check_same_shape(input, *weight, op, "input", "weight");
  }
  check_out(input, out, reduction, input.numel(), op, out_name);
  check_stats(input, stats, 2, op);
  return MseShape{input.numel()};
}

CeShape ce_check(const TensorView& values, const TensorView& target, const OptView& weight,
                 const TensorView& stats, int reduction, double label_smoothing, const char* op,
                 const char* values_name) {
  check_reduction(reduction, op);
  check_defined(values, op, values_name);
  check_dim(values, 3, op, values_name);
  check_contiguous(values, op, values_name);
  CeShape s;
  s.n = values.sizes[0];
  s.classes = values.sizes[1];
  s.inner = values.sizes[2];
  check_defined(target, op, "target");
  check_same_device(values, target, op, values_name, "target");
  check_contiguous(target, op, "target");
  if (target.dtype == DType::Int64) {
    PYNN_CHECK(target.dim == 2 && target.sizes[0] == s.n && target.sizes[1] == s.inner, op,
               ": class-index target must have shape [", s.n, ", ", s.inner, "], got ",
               target.shape_str());
  } else {
    s.prob = true;
    check_same_dtype(values, target, op, values_name, "target");
    check_same_shape(values, target, op, values_name, "target");
  }
  if (weight) {
    check_like(values, *weight, op, values_name, "weight");
    PYNN_CHECK(weight->dim == 1 && weight->sizes[0] == s.classes, op, ": weight must have shape [",
               s.classes, "], got ", weight->shape_str());
  }
  PYNN_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, op,
             ": label_smoothing must be in [0, 1], got ", label_smoothing);
  check_stats(values, stats, kNumStats, op);
  return s;
}

// ---------------------------------------------------------------- MSE

void mse_loss_forward_cpu(const TensorView& input, const TensorView& target, const OptView& weight,
                          const TensorView& output, const TensorView& stats,
                          const OptView& workspace, int reduction, double weight_repeat) {
  const char* op = "mse_loss_forward";
  const MseShape s = mse_check(input, target, weight, output, stats, reduction, op, "output");
  const Reduction red = static_cast<Reduction>(reduction);
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    const T* x = input.ptr<T>();
    const T* t = target.ptr<T>();
    const T* w = weight ? weight->ptr<T>() : nullptr;
    T* out = output.ptr<T>();
    if (red == Reduction::None) {
      parallel_for(0, s.n, kGrainElems, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) out[i] = w ? w[i] * mse_term(x[i], t[i]) : mse_term(x[i], t[i]);
      });
      return;
    }
    double* st = stats.ptr<double>();
    reduce_blocks(s.n, kGrainElems, 2, st, [&](int64_t b, int64_t e, double* acc) {
      mse_sums(x + b, t + b, w ? w + b : nullptr, e - b, acc);
    });
    const double denom = w ? st[1] / weight_repeat : double(s.n);
    out[0] = static_cast<T>(red == Reduction::Mean ? st[0] / denom : st[0]);
  });
}

void mse_loss_backward_cpu(const TensorView& grad_output, const TensorView& input,
                           const TensorView& target, const OptView& weight,
                           const TensorView& stats, const OptView& grad_input,
                           const OptView& grad_target, const OptView& grad_weight, int reduction,
                           double weight_repeat) {
  const char* op = "mse_loss_backward";
  const MseShape s = mse_check(input, target, weight, grad_output, stats, reduction, op,
                               "grad_output");
  for (const OptView* g : {&grad_input, &grad_target, &grad_weight})
    if (*g) {
      check_like(input, **g, op, "input", "a gradient");
      check_same_shape(input, **g, op, "input", "a gradient");
    }
  PYNN_CHECK(!grad_weight || weight, op, ": grad_weight needs weight");
  const Reduction red = static_cast<Reduction>(reduction);
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    const T* x = input.ptr<T>();
    const T* t = target.ptr<T>();
    const T* w = weight ? weight->ptr<T>() : nullptr;
    const T* g = grad_output.ptr<T>();
    T* gx = grad_input ? grad_input->ptr<T>() : nullptr;
    T* gt = grad_target ? grad_target->ptr<T>() : nullptr;
    T* gw = grad_weight ? grad_weight->ptr<T>() : nullptr;
    const double* st = stats.ptr<double>();
    // Mean: every element's gradient is scaled by 1/denom; a weighted mean also moves with
    // the weight through its denominator (see ops/loss.h for weight_repeat).
    double denom = 1.0, loss_over_repeat = 0.0;
    if (red == Reduction::Mean) {
      denom = w ? st[1] / weight_repeat : double(s.n);
      loss_over_repeat = st[0] / denom / weight_repeat;
    }
    const bool per_element = red == Reduction::None;
    const T go_all = per_element ? T(0) : static_cast<T>(double(g[0]) / denom);
    const T centre = red == Reduction::Mean ? static_cast<T>(loss_over_repeat) : T(0);
    parallel_for(0, s.n, kGrainElems, [&](int64_t b, int64_t e) {
      mse_grads(x + b, t + b, w ? w + b : nullptr, per_element ? g + b : nullptr, go_all, centre,
                e - b, gx ? gx + b : nullptr, gt ? gt + b : nullptr, gw ? gw + b : nullptr);
    });
  });
}

// ---------------------------------------------------------------- cross-entropy

namespace {

template <class T>
struct CeArgs {
  const T* w;  // null without a weight
  int64_t classes, inner, ignore_index;
  T smoothing, inv_classes;
};

// Gradient of one contiguous row (K == 1), vectorised along it and compiled per instruction
// set like the softmax rows.
template <class T>
inline void class_grad_row_impl(const T* l, T* gx, int64_t C, int64_t t, T wt, const T* w, T a,
                                T b, T wall) {
  const cpu::VecExp ex;
  // Two loops rather than `w ? w[c] : 1`: a conditional load would keep the loop scalar.
  if (w) {
    for (int64_t c = 0; c < C; ++c) gx[c] = class_grad(ex(l[c]), c == t, wt, w[c], a, b, wall);
  } else {
    for (int64_t c = 0; c < C; ++c) gx[c] = class_grad(ex(l[c]), c == t, wt, T(1), a, b, wall);
  }
}

// Weighted is a template parameter so that no loop holds a conditional load (w may be null),
// which would keep it from vectorising.
template <bool Weighted, class T>
inline void prob_grad_row_w(const T* l, const T* q, T* gx, T* gt, int64_t C, const T* w,
                            T smoothing, T inv_c, T coef) {
  const cpu::VecExp ex;
  auto wc = [&](int64_t c) { return Weighted ? w[c] : T(1); };
  // sum_c smoothed_target(q_c) w_c, its two plain sums on vectors (cpu/row_reduce.h)
  const double sw = Weighted ? cpu::row_sum_product(C, w) : double(C);
  const double sqw = Weighted ? cpu::row_sum_product(C, q, w) : cpu::row_sum_product(C, q);
  const T swq = static_cast<T>(smoothed_target_sum<double>(sqw, sw, smoothing, inv_c));
  for (int64_t k = 0; k < C; ++k)
    gx[k] = prob_grad(ex(l[k]), smoothed_target(q[k], smoothing, inv_c) * wc(k), swq, coef);
  if (gt)
    for (int64_t k = 0; k < C; ++k) gt[k] = prob_grad_target(l[k], wc(k), smoothing, coef);
}

template <class T>
inline void prob_grad_row_impl(const T* l, const T* q, T* gx, T* gt, int64_t C, const T* w,
                               T smoothing, T inv_c, T coef) {
  if (w) prob_grad_row_w<true>(l, q, gx, gt, C, w, smoothing, inv_c, coef);
  else prob_grad_row_w<false>(l, q, gx, gt, C, w, smoothing, inv_c, coef);
}

PYNN_SOFTMAX_ENTRY
void class_grad_row(const float* l, float* gx, int64_t C, int64_t t, float wt, const float* w,
                    float a, float b, float wall) {
  class_grad_row_impl(l, gx, C, t, wt, w, a, b, wall);
}
PYNN_SOFTMAX_ENTRY
void class_grad_row(const double* l, double* gx, int64_t C, int64_t t, double wt,
                    const double* w, double a, double b, double wall) {
  class_grad_row_impl(l, gx, C, t, wt, w, a, b, wall);
}
PYNN_SOFTMAX_ENTRY
void prob_grad_row(const float* l, const float* q, float* gx, float* gt, int64_t C,
                   const float* w, float smoothing, float inv_c, float coef) {
  prob_grad_row_impl(l, q, gx, gt, C, w, smoothing, inv_c, coef);
}
PYNN_SOFTMAX_ENTRY
void prob_grad_row(const double* l, const double* q, double* gx, double* gt, int64_t C,
                   const double* w, double smoothing, double inv_c, double coef) {
  prob_grad_row_impl(l, q, gx, gt, C, w, smoothing, inv_c, coef);
}

// The same for a tile of w samples at neighbouring positions (K > 1), vectorised across the
// tile. Per-sample values come in arrays; a sample with nothing to contribute (ignored) has
// a = b = 0 and t = -1.
template <class T>
inline void class_grad_tile_impl(const T* l, T* gx, int64_t C, int64_t K, int64_t w,
                                 const int64_t* t, const T* wt, const T* a, const T* b,
                                 const T* wcls, T wall) {
  const cpu::VecExp ex;
  for (int64_t c = 0; c < C; ++c) {
    const T wc = wcls ? wcls[c] : T(1);
    for (int64_t j = 0; j < w; ++j)
      gx[c * K + j] = class_grad(ex(l[c * K + j]), c == t[j], wt[j], wc, a[j], b[j], wall);
  }
}

template <class T>
inline void prob_grad_tile_impl(const T* l, const T* q, T* gx, T* gt, int64_t C, int64_t K,
                                int64_t w, const T* wcls, T smoothing, T inv_c, const T* coef) {
  const cpu::VecExp ex;
  double acc[cpu::kSoftmaxTile];
  std::fill_n(acc, w, 0.0);
  for (int64_t c = 0; c < C; ++c) {
    const T wc = wcls ? wcls[c] : T(1);
    for (int64_t j = 0; j < w; ++j) acc[j] += double(smoothed_target(q[c * K + j], smoothing, inv_c) * wc);
  }
  T swq[cpu::kSoftmaxTile];
  for (int64_t j = 0; j < w; ++j) swq[j] = static_cast<T>(acc[j]);
  for (int64_t c = 0; c < C; ++c) {
    const T wc = wcls ? wcls[c] : T(1);
    for (int64_t j = 0; j < w; ++j) {
      const T wq = smoothed_target(q[c * K + j], smoothing, inv_c) * wc;
      gx[c * K + j] = prob_grad(ex(l[c * K + j]), wq, swq[j], coef[j]);
      if (gt) gt[c * K + j] = prob_grad_target(l[c * K + j], wc, smoothing, coef[j]);
    }
  }
}

PYNN_SOFTMAX_ENTRY
void class_grad_tile(const float* l, float* gx, int64_t C, int64_t K, int64_t w,
                     const int64_t* t, const float* wt, const float* a, const float* b,
                     const float* wcls, float wall) {
  class_grad_tile_impl(l, gx, C, K, w, t, wt, a, b, wcls, wall);
}
PYNN_SOFTMAX_ENTRY
void class_grad_tile(const double* l, double* gx, int64_t C, int64_t K, int64_t w,
                     const int64_t* t, const double* wt, const double* a, const double* b,
                     const double* wcls, double wall) {
  class_grad_tile_impl(l, gx, C, K, w, t, wt, a, b, wcls, wall);
}
PYNN_SOFTMAX_ENTRY
void prob_grad_tile(const float* l, const float* q, float* gx, float* gt, int64_t C, int64_t K,
                    int64_t w, const float* wcls, float smoothing, float inv_c,
                    const float* coef) {
  prob_grad_tile_impl(l, q, gx, gt, C, K, w, wcls, smoothing, inv_c, coef);
}
PYNN_SOFTMAX_ENTRY
void prob_grad_tile(const double* l, const double* q, double* gx, double* gt, int64_t C,
                    int64_t K, int64_t w, const double* wcls, double smoothing, double inv_c,
                    const double* coef) {
  prob_grad_tile_impl(l, q, gx, gt, C, K, w, wcls, smoothing, inv_c, coef);
}

}  // namespace

void cross_entropy_forward_cpu(const TensorView& input, const TensorView& target,
                               const OptView& weight, const TensorView& log_probs,
                               const TensorView& loss, const TensorView& stats,
                               const OptView& workspace, const OptView& status, int reduction,
                               int64_t ignore_index, double label_smoothing) {
  const char* op = "cross_entropy_forward";
  const CeShape s = ce_check(input, target, weight, stats, reduction, label_smoothing, op, "input");
  check_like(input, log_probs, op, "input", "log_probs");
  check_same_shape(input, log_probs, op, "input", "log_probs");
  const int64_t samples = s.n * s.inner;
  check_out(input, loss, reduction, samples, op, "loss");
  const Reduction red = static_cast<Reduction>(reduction);
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    const CeArgs<T> a{weight ? weight->ptr<T>() : nullptr, s.classes, s.inner, ignore_index,
                      static_cast<T>(label_smoothing), static_cast<T>(1.0 / double(s.classes))};
    const T* x = input.ptr<T>();
    T* lp = log_probs.ptr<T>();
    T* out = loss.ptr<T>();
    const int64_t* tc = s.prob ? nullptr : target.ptr<int64_t>();
    const T* tp = s.prob ? target.ptr<T>() : nullptr;
    const int64_t C = s.classes, K = s.inner;
    // Samples go in tiles of up to kSoftmaxTile neighbouring positions j of one image n, so that
    // with K > 1 every pass over the classes reads runs of whole cache lines (one sample at a
    // time, its C strided loads would each miss).
    const int64_t width = cpu::softmax_tile_width(K);
    const int64_t blocks = K > 0 ? (K + width - 1) / width : 0;
    const int64_t tiles = s.n * blocks;
    // acc == nullptr: write each sample's loss; else add its terms (see CeStat) to acc.
    auto tile = [&](int64_t ti, double* acc) {
      const int64_t n = ti / blocks, j0 = (ti % blocks) * width, w = std::min(width, K - j0);
      const int64_t base = n * C * K + j0, i0 = n * K + j0;
      if (C > 0) cpu::softmax_tile_forward(x + base, lp + base, C, K, w, /*log_space=*/true);
      const T* l = lp + base;
      // prob: -sum_c w_c q'_c lp_c; class targets: the smoothing sum -sum_c w_c lp_c. Only the
      // tile's w entries are zeroed: a row (K == 1) is a tile of one, once per sample.
      double part[cpu::kSoftmaxTile];
      std::fill_n(part, w, 0.0);
      if (K == 1) {
        // One contiguous row: the sums run on vectors (cpu/row_reduce.h), the prob sum as
        // smoothed_target_sum's two plain sums of w_c lp_c.
        auto sum_wl = [&](const T* q) {
          if (q) return a.w ? cpu::row_sum_product(C, q, a.w, l) : cpu::row_sum_product(C, q, l);
          return a.w ? cpu::row_sum_product(C, a.w, l) : cpu::row_sum_product(C, l);
        };
        const double smooth = a.smoothing > T(0) ? sum_wl(nullptr) : 0.0;
        part[0] = tp ? -smoothed_target_sum<double>(sum_wl(tp + base), smooth, a.smoothing,
                                                    a.inv_classes)
                     : -smooth;
      } else if (tp) {
        const T* q = tp + base;
        for (int64_t c = 0; c < C; ++c) {
          const T wc = a.w ? a.w[c] : T(1);
          for (int64_t j = 0; j < w; ++j)
            part[j] -= double(smoothed_target(q[c * K + j], a.smoothing, a.inv_classes) * wc *
                              l[c * K + j]);
        }
      } else if (a.smoothing > T(0)) {
        for (int64_t c = 0; c < C; ++c) {
          const T wc = a.w ? a.w[c] : T(1);
          for (int64_t j = 0; j < w; ++j) part[j] -= double(wc * l[c * K + j]);
        }
      }
      for (int64_t j = 0; j < w; ++j) {
        const int64_t i = i0 + j;
        if (tp) {
          if (acc) acc[kStatLoss] += part[j];
          else out[i] = static_cast<T>(part[j]);
          continue;
        }
        const int64_t t = tc[i];
        const TargetKind kind = classify_target(t, C, a.ignore_index);
        PYNN_CHECK(kind != TargetKind::OutOfRange, "cross_entropy: target ", t,
                   " is out of bounds (class indices must be in [0, ", C,
                   ") or equal ignore_index=", a.ignore_index, ")");
        if (kind == TargetKind::Ignored) {
          if (!acc) out[i] = T(0);
          continue;
        }
        const T wt = a.w ? a.w[t] : T(1);
        const T nll = -wt * l[t * K + j];
        if (acc) {
          acc[kStatLoss] += double(nll);
          acc[kStatWeight] += double(wt);
          acc[kStatSmooth] += part[j];
        } else {
          out[i] = class_loss(nll, static_cast<T>(part[j]), a.smoothing, a.inv_classes);
        }
      }
    };
    const int64_t tiles_per_block =
        std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, C * width));
    if (red == Reduction::None) {
      parallel_for(0, tiles, tiles_per_block, [&](int64_t b, int64_t e) {
        for (int64_t ti = b; ti < e; ++ti) tile(ti, nullptr);
      });
      return;
    }
    double* st = stats.ptr<double>();
    reduce_blocks(tiles, tiles_per_block, kNumStats, st, [&](int64_t b, int64_t e, double* acc) {
      for (int64_t ti = b; ti < e; ++ti) tile(ti, acc);
    });
    double r;
    if (s.prob)
      r = red == Reduction::Mean ? st[kStatLoss] / double(samples) : st[kStatLoss];
    else
      r = class_loss_reduced<double>(red, st[kStatLoss], st[kStatWeight], st[kStatSmooth],
                                     label_smoothing, 1.0 / double(C));
    out[0] = static_cast<T>(r);
  });
}

void cross_entropy_backward_cpu(const TensorView& grad_output, const TensorView& log_probs,
                                const TensorView& target, const OptView& weight,
                                const TensorView& stats, const TensorView& grad_input,
                                const OptView& grad_target, int reduction, int64_t ignore_index,
                                double label_smoothing) {
  const char* op = "cross_entropy_backward";
  const CeShape s =
      ce_check(log_probs, target, weight, stats, reduction, label_smoothing, op, "log_probs");
  const int64_t samples = s.n * s.inner;
  check_out(log_probs, grad_output, reduction, samples, op, "grad_output");
  check_like(log_probs, grad_input, op, "log_probs", "grad_input");
  check_same_shape(log_probs, grad_input, op, "log_probs", "grad_input");
  if (grad_target) {
    PYNN_CHECK(s.prob, op, ": grad_target exists only for probability targets");
    check_like(log_probs, *grad_target, op, "log_probs", "grad_target");
    check_same_shape(log_probs, *grad_target, op, "log_probs", "grad_target");
  }
  const Reduction red = static_cast<Reduction>(reduction);
  if (samples == 0 || s.classes == 0) return;  // grad_input is empty
  dispatch_floating(log_probs.dtype, op, "log_probs", [&](auto tag) {
    using T = decltype(tag);
    const int64_t C = s.classes, K = s.inner;
    const T* lp = log_probs.ptr<T>();
    const T* w = weight ? weight->ptr<T>() : nullptr;
    const T* g = grad_output.ptr<T>();
    T* gi = grad_input.ptr<T>();
    T* gt = grad_target ? grad_target->ptr<T>() : nullptr;
    const double* st = stats.ptr<double>();
    const T ls = static_cast<T>(label_smoothing), inv_c = static_cast<T>(1.0 / double(C));
    // A mean scales every gradient by 1 / (its denominator in the forward, see math/loss.h).
    double scale = 1.0;
    if (red == Reduction::Mean) scale = 1.0 / (s.prob ? double(samples) : st[kStatWeight]);
    double wsum_all = double(C);
    if (w) {
      wsum_all = 0.0;
      for (int64_t c = 0; c < C; ++c) wsum_all += double(w[c]);
    }
    const T wall = static_cast<T>(wsum_all);
    const int64_t* tc = s.prob ? nullptr : target.ptr<int64_t>();
    const T* tp = s.prob ? target.ptr<T>() : nullptr;
    const double nll_part = 1.0 - label_smoothing, smooth_part = label_smoothing / double(C);
    if (K == 1) {
      // Rows are contiguous: one sample at a time, vectorised along its classes.
      parallel_for(0, samples, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, C)),
                   [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const T* l = lp + i * C;
          T* gx = gi + i * C;
          const double go = double(red == Reduction::None ? g[i] : g[0]) * scale;
          if (tp) {
            prob_grad_row(l, tp + i * C, gx, gt ? gt + i * C : nullptr, C, w, ls, inv_c,
                          static_cast<T>(go));
            continue;
          }
          const int64_t t = tc[i];
          if (classify_target(t, C, ignore_index) != TargetKind::Valid) {
            for (int64_t c = 0; c < C; ++c) gx[c] = T(0);
            continue;
          }
          class_grad_row(l, gx, C, t, w ? w[t] : T(1), w, static_cast<T>(go * nll_part),
                         static_cast<T>(go * smooth_part), wall);
        }
      });
      return;
    }
    const int64_t width = cpu::softmax_tile_width(K);
    const int64_t blocks = (K + width - 1) / width;
    parallel_for(0, s.n * blocks, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, C * width)),
                 [&](int64_t b, int64_t e) {
      for (int64_t ti = b; ti < e; ++ti) {
        const int64_t n = ti / blocks, j0 = (ti % blocks) * width, wd = std::min(width, K - j0);
        const int64_t base = n * C * K + j0, i0 = n * K + j0;
        T coef[cpu::kSoftmaxTile], a[cpu::kSoftmaxTile], bb[cpu::kSoftmaxTile];
        T wt[cpu::kSoftmaxTile];
        int64_t t[cpu::kSoftmaxTile];
        for (int64_t j = 0; j < wd; ++j) {
          const double go = double(red == Reduction::None ? g[i0 + j] : g[0]) * scale;
          coef[j] = static_cast<T>(go);
          if (tp) continue;
          t[j] = tc[i0 + j];
          const bool valid = classify_target(t[j], C, ignore_index) == TargetKind::Valid;
          if (!valid) t[j] = -1;
          wt[j] = valid ? (w ? w[t[j]] : T(1)) : T(0);
          a[j] = valid ? static_cast<T>(go * nll_part) : T(0);
          bb[j] = valid ? static_cast<T>(go * smooth_part) : T(0);
        }
        if (tp)
          prob_grad_tile(lp + base, tp + base, gi + base, gt ? gt + base : nullptr, C, K, wd, w,
                         ls, inv_c, coef);
        else
          class_grad_tile(lp + base, gi + base, C, K, wd, t, wt, a, bb, w, wall);
      }
    });
  });
}

}  // namespace pynn
