#include "ops/loss.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/dispatch.h"
#include "core/parallel.h"
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
      double sum = 0.0, wsum = 0.0;
      for (int64_t i = b; i < e; ++i) {
        const double se = static_cast<double>(mse_term(x[i], t[i]));
        sum += w ? double(w[i]) * se : se;
        if (w) wsum += double(w[i]);
      }
      acc[0] = sum;
      acc[1] = w ? wsum : double(e - b);
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
    parallel_for(0, s.n, kGrainElems, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const T go = red == Reduction::None ? g[i] : static_cast<T>(double(g[0]) / denom);
        const T gxi = mse_grad(x[i], t[i], w ? go * w[i] : go);
        if (gx) gx[i] = gxi;
        if (gt) gt[i] = -gxi;
        if (gw) {
          const T se = mse_term(x[i], t[i]);
          gw[i] = go * (red == Reduction::Mean ? se - static_cast<T>(loss_over_repeat) : se);
        }
      }
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

// log_softmax of one sample's row (stride `inner`) into lp; returns nothing, the row is then
// read back from lp by the loss terms.
template <class T>
void log_softmax_row(const T* x, T* lp, int64_t classes, int64_t inner) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t c = 0; c < classes; ++c) m = max_step(m, x[c * inner]);
  double s = 0.0;
  for (int64_t c = 0; c < classes; ++c) s += std::exp(x[c * inner] - m);
  const T log_s = static_cast<T>(std::log(s));
  for (int64_t c = 0; c < classes; ++c)
    lp[c * inner] = softmax_output<true>(x[c * inner], m, T(0), log_s);
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
    // Per sample: the loss term, w_t (class targets), the smoothing term.
    auto sample = [&](int64_t i, double* terms) {
      const int64_t base = (i / K) * C * K + i % K;
      if (C > 0) log_softmax_row(x + base, lp + base, C, K);
      const T* l = lp + base;
      if (tp) {
        const T* q = tp + base;
        double acc = 0.0;
        for (int64_t c = 0; c < C; ++c) {
          const T wq = smoothed_target(q[c * K], a.smoothing, a.inv_classes) * (a.w ? a.w[c] : T(1));
          acc -= double(wq * l[c * K]);
        }
        terms[0] = acc;
        return static_cast<T>(acc);
      }
      const int64_t t = tc[i];
      const TargetKind kind = classify_target(t, C, a.ignore_index);
      PYNN_CHECK(kind != TargetKind::OutOfRange, "cross_entropy: target ", t,
                 " is out of bounds (class indices must be in [0, ", C, ") or equal ignore_index=",
                 a.ignore_index, ")");
      if (kind == TargetKind::Ignored) return T(0);
      const T wt = a.w ? a.w[t] : T(1);
      const T nll = -wt * l[t * K];
      double smooth = 0.0;
      if (a.smoothing > T(0))
        for (int64_t c = 0; c < C; ++c) smooth -= double((a.w ? a.w[c] : T(1)) * l[c * K]);
      terms[0] = nll;
      terms[1] = wt;
      terms[2] = smooth;
      return class_loss(nll, static_cast<T>(smooth), a.smoothing, a.inv_classes);
    };
    const int64_t rows_per_block = std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, C));
    if (red == Reduction::None) {
      parallel_for(0, samples, rows_per_block, [&](int64_t b, int64_t e) {
        double terms[kNumStats];
        for (int64_t i = b; i < e; ++i) out[i] = sample(i, terms);
      });
      return;
    }
    double* st = stats.ptr<double>();
    reduce_blocks(samples, rows_per_block, kNumStats, st, [&](int64_t b, int64_t e, double* acc) {
      for (int64_t i = b; i < e; ++i) {
        double terms[kNumStats] = {0.0, 0.0, 0.0};
        sample(i, terms);
        for (int k = 0; k < kNumStats; ++k) acc[k] += terms[k];
      }
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
    // Gradient scales of the two parts of the loss for a reduced loss (see math/loss.h).
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
    parallel_for(0, samples, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, C)),
                 [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t base = (i / K) * C * K + i % K;
        const T* l = lp + base;
        T* gx = gi + base;
        const T go = red == Reduction::None ? g[i] : g[0];
        if (tp) {
          const T* q = tp + base;
          const T coef = static_cast<T>(double(go) * scale);
          double sum_wq = 0.0;
          for (int64_t c = 0; c < C; ++c)
            sum_wq += double(smoothed_target(q[c * K], ls, inv_c) * (w ? w[c] : T(1)));
          for (int64_t c = 0; c < C; ++c) {
            const T wc = w ? w[c] : T(1);
            const T wq = smoothed_target(q[c * K], ls, inv_c) * wc;
            gx[c * K] = prob_grad(std::exp(l[c * K]), wq, static_cast<T>(sum_wq), coef);
            if (gt) gt[base + c * K] = prob_grad_target(l[c * K], wc, ls, coef);
          }
          continue;
        }
        const int64_t t = tc[i];
        if (classify_target(t, C, ignore_index) != TargetKind::Valid) {
          for (int64_t c = 0; c < C; ++c) gx[c * K] = T(0);
          continue;
        }
        const T a = static_cast<T>(double(go) * scale * (1.0 - label_smoothing));
        const T bb = static_cast<T>(double(go) * scale * label_smoothing / double(C));
        const T wt = w ? w[t] : T(1);
        for (int64_t c = 0; c < C; ++c)
          gx[c * K] = class_grad(std::exp(l[c * K]), c == t, wt, w ? w[c] : T(1), a, bb, wall);
      }
    });
  });
}

}  // namespace pynn
