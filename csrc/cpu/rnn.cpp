// CPU backend of the RNN / LSTM time loops (csrc/ops/rnn_loop.h): GEMMs go to gemm_cpu, the
// fused pointwise step of each time step is one pass over [batch, hidden] on the thread pool.
// The argument checks shared with the CUDA backend live here too.
#include <algorithm>
#include <initializer_list>
#include <vector>

#include "core/dispatch.h"
#include "core/macros.h"
#include "core/parallel.h"
#include "cpu/gemm.h"
#include "math/rnn.h"
#include "ops/rnn.h"
#include "ops/rnn_loop.h"

namespace pynn {
namespace rnn {

// ---- argument checks ---------------------------------------------------------------------------

namespace {

// Checks one tensor against x (dtype, device) and an expected shape; names it on failure.
struct Checker {
  const char* op;
  const TensorView& x;

  void operator()(const TensorView& v, const char* name, std::initializer_list<int64_t> shape,
                  bool weight = false) const {
    PYNN_CHECK(v.dim == static_cast<int>(shape.size()), op, ": ", name, " must be ", shape.size(),
               "-D, got ", v.dim, "-D with shape ", v.shape_str());
    int d = 0;
    bool ok = true;
    for (int64_t s : shape) ok = ok && v.sizes[d++] == s;
    if (!ok) {
      std::string want = "[";
      d = 0;
      for (int64_t s : shape) want += (d++ ? ", " : "") + std::to_string(s);
      throw ValueError(detail::concat(op, ": ", name, " has shape ", v.shape_str(),
                                      ", expected ", want, "]"));
    }
    check_same_dtype(x, v, op, "input", name);
    check_same_device(x, v, op, "input", name);
    check_defined(v, op, name);
    // Weights are GEMM operands and may have any strides; everything else is walked row by row.
    if (!weight && v.numel() > 0)
      PYNN_CHECK(v.size(-1) <= 1 || v.stride(-1) == 1, op, ": ", name,
                 " must have unit stride in its last dimension, got strides of shape ",
                 v.shape_str(), " with last stride ", v.stride(-1));
  }

  void optional(const TensorView& v, const char* name, std::initializer_list<int64_t> shape,
                bool weight = false) const {
    if (v.numel() == 0 && v.dim <= 1) return;  // absent
    (*this)(v, name, shape, weight);
  }
};

void check_sequence(const TensorView& x, const char* op) {
  check_dim(x, 3, op, "input");
  PYNN_CHECK(x.size(0) > 0, op, ": expected sequence length to be larger than 0, got input of "
             "shape ", x.shape_str());
  PYNN_CHECK(x.size(2) <= 1 || x.stride(2) == 1, op,
             ": input must have unit stride in its last dimension");
  dispatch_floating(x.dtype, op, "input", [](auto) {});
}

}  // namespace

void check_lstm_forward(const TensorView& x, const TensorView& h0, const TensorView& c0,
                        const TensorView& w_ih, const TensorView& w_hh, const TensorView& b_ih,
                        const TensorView& b_hh, const TensorView& w_hr, const TensorView& y,
                        const TensorView& hn, const TensorView& cn, const TensorView& gates,
                        const TensorView& cs, const TensorView& hr) {
  const char* op = "lstm_forward";
  check_sequence(x, op);
  check_dim(h0, 2, op, "h0");
  check_dim(c0, 2, op, "c0");
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), P = h0.size(1), H = c0.size(1);
  const Checker c{op, x};
  c(h0, "h0", {B, P});
  c(c0, "c0", {B, H});
  c(w_ih, "w_ih", {4 * H, I}, true);
  c(w_hh, "w_hh", {4 * H, P}, true);
  c.optional(b_ih, "b_ih", {4 * H});
  c.optional(b_hh, "b_hh", {4 * H});
  PYNN_CHECK((b_ih.numel() == 0) == (b_hh.numel() == 0), op,
             ": b_ih and b_hh must be given together");
  c.optional(w_hr, "w_hr", {P, H}, true);
  PYNN_CHECK(w_hr.numel() > 0 || P == H, op, ": without w_hr, h0 must have the hidden size ", H,
             ", got ", P);
  c(y, "output", {T, B, P});
  c(hn, "h_n", {B, P});
  c(cn, "c_n", {B, H});
  c(gates, "gates", {T, B, 4 * H});
  c(cs, "cell_states", {T, B, H});
  if (w_hr.numel() > 0) c(hr, "hr", {T, B, H});
}

void check_lstm_backward(const TensorView& x, const TensorView& h0, const TensorView& c0,
                         const TensorView& w_ih, const TensorView& w_hh, const TensorView& w_hr,
                         const TensorView& y, const TensorView& gates, const TensorView& cs,
                         const TensorView& hr, const TensorView& grad_y,
                         const TensorView& grad_hn, const TensorView& grad_cn,
                         const TensorView& dgates, const TensorView& dy, const TensorView& dhr,
                         const TensorView& grad_x, const TensorView& grad_h0,
                         const TensorView& grad_c0, const TensorView& grad_w_ih,
                         const TensorView& grad_w_hh, const TensorView& grad_b_ih,
                         const TensorView& grad_b_hh, const TensorView& grad_w_hr) {
  const char* op = "lstm_backward";
  check_sequence(x, op);
  check_dim(h0, 2, op, "h0");
  check_dim(c0, 2, op, "c0");
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), P = h0.size(1), H = c0.size(1);
  const bool proj = w_hr.numel() > 0;
  const Checker c{op, x};
  c(h0, "h0", {B, P});
  c(c0, "c0", {B, H});
  c(w_ih, "w_ih", {4 * H, I}, true);
  c(w_hh, "w_hh", {4 * H, P}, true);
  c.optional(w_hr, "w_hr", {P, H}, true);
  PYNN_CHECK(proj || P == H, op, ": without w_hr, h0 must have the hidden size ", H, ", got ", P);
  c(y, "output", {T, B, P});
  c(gates, "gates", {T, B, 4 * H});
  c(cs, "cell_states", {T, B, H});
  c.optional(grad_y, "grad_output", {T, B, P});
  c.optional(grad_hn, "grad_h_n", {B, P});
  c.optional(grad_cn, "grad_c_n", {B, H});
  c(dgates, "grad_gates", {T, B, 4 * H});
  if (proj) {
    c(hr, "hr", {T, B, H});
    c(dy, "grad_h", {T, B, P});
    c(dhr, "grad_hr", {B, H});
    c(grad_w_hr, "grad_w_hr", {P, H});
  }
  c.optional(grad_x, "grad_input", {T, B, I});
  c(grad_h0, "grad_h0", {B, P});
  c(grad_c0, "grad_c0", {B, H});
  c(grad_w_ih, "grad_w_ih", {4 * H, I});
  c(grad_w_hh, "grad_w_hh", {4 * H, P});
  c.optional(grad_b_ih, "grad_b_ih", {4 * H});
  c.optional(grad_b_hh, "grad_b_hh", {4 * H});
  PYNN_CHECK((grad_b_ih.numel() == 0) == (grad_b_hh.numel() == 0), op,
             ": grad_b_ih and grad_b_hh must be given together");
}

void check_rnn_forward(const TensorView& x, const TensorView& h0, const TensorView& w_ih,
                       const TensorView& w_hh, const TensorView& b_ih, const TensorView& b_hh,
                       const TensorView& y, const TensorView& hn, int kind) {
  const char* op = "rnn_forward";
  check_sequence(x, op);
  check_dim(h0, 2, op, "h0");
  dispatch_rnn_nonlinearity(kind, op, [](auto) {});
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  const Checker c{op, x};
  c(h0, "h0", {B, H});
  c(w_ih, "w_ih", {H, I}, true);
  c(w_hh, "w_hh", {H, H}, true);
  c.optional(b_ih, "b_ih", {H});
  c.optional(b_hh, "b_hh", {H});
  PYNN_CHECK((b_ih.numel() == 0) == (b_hh.numel() == 0), op,
             ": b_ih and b_hh must be given together");
  c(y, "output", {T, B, H});
  c(hn, "h_n", {B, H});
}

void check_rnn_backward(const TensorView& x, const TensorView& h0, const TensorView& w_ih,
                        const TensorView& w_hh, const TensorView& y, const TensorView& grad_y,
                        const TensorView& grad_hn, const TensorView& dgates,
                        const TensorView& grad_x, const TensorView& grad_h0,
                        const TensorView& grad_w_ih, const TensorView& grad_w_hh,
                        const TensorView& grad_b_ih, const TensorView& grad_b_hh, int kind) {
  const char* op = "rnn_backward";
  check_sequence(x, op);
  check_dim(h0, 2, op, "h0");
  dispatch_rnn_nonlinearity(kind, op, [](auto) {});
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  const Checker c{op, x};
  c(h0, "h0", {B, H});
  c(w_ih, "w_ih", {H, I}, true);
  c(w_hh, "w_hh", {H, H}, true);
  c(y, "output", {T, B, H});
  c.optional(grad_y, "grad_output", {T, B, H});
  c.optional(grad_hn, "grad_h_n", {B, H});
  c(dgates, "grad_pre", {T, B, H});
  c.optional(grad_x, "grad_input", {T, B, I});
  c(grad_h0, "grad_h0", {B, H});
  c(grad_w_ih, "grad_w_ih", {H, I});
  c(grad_w_hh, "grad_w_hh", {H, H});
  c.optional(grad_b_ih, "grad_b_ih", {H});
  c.optional(grad_b_hh, "grad_b_hh", {H});
  PYNN_CHECK((grad_b_ih.numel() == 0) == (grad_b_hh.numel() == 0), op,
             ": grad_b_ih and grad_b_hh must be given together");
}

void check_dropout(const TensorView& input, const TensorView& mask, const TensorView& output) {
  const char* op = "rnn_dropout";
  dispatch_floating(input.dtype, op, "input", [](auto) {});
  check_same_dtype(input, mask, op, "input", "mask");
  check_same_dtype(input, output, op, "input", "output");
  check_same_device(input, mask, op, "input", "mask");
  check_same_device(input, output, op, "input", "output");
  check_same_dense_layout(input, mask, op, "input", "mask");
  check_same_dense_layout(input, output, op, "input", "output");
}

// ---- CPU backend -------------------------------------------------------------------------------

namespace {

// Like gemm.cpp: the row loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at
// load time, so the branch-free gate math of math/rnn.h runs as 16 / 8 / 4 lanes.

// Each unit j of a row is independent: telling the compiler so spares it the run-time overlap
// checks between the many row pointers, past whose limit it would not vectorise at all.
#if defined(__clang__)
#define PYNN_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define PYNN_IVDEP _Pragma("GCC ivdep")
#else
#define PYNN_IVDEP
#endif

// The row bodies below must be inlined into each versioned entry point to be compiled for its
// instruction set; left to itself GCC keeps the large LSTM body out of line, in baseline code.

// Rows per task of a pointwise pass: enough elements that waking a worker pays off.
int64_t row_grain(int64_t cols) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(cols, 1)); }

// One batch row of the LSTM step: g holds the row's 4H pre-activations and receives the
// activated gates. bi / bh are both null without bias.
template <class T>
PYNN_ALWAYS_INLINE void lstm_row_forward_impl(int64_t H, T* __restrict g, const T* __restrict bi,
                                  const T* __restrict bh, const T* __restrict cp,
                                  T* __restrict c, T* __restrict h) {
  T* __restrict gi = g;
  T* __restrict gf = g + H;
  T* __restrict gg = g + 2 * H;
  T* __restrict go = g + 3 * H;
  if (bi) {
    for (int64_t j = 0; j < 4 * H; ++j) g[j] += bi[j] + bh[j];
  }
  PYNN_IVDEP
  for (int64_t j = 0; j < H; ++j) {
    T i = gi[j], f = gf[j], gv = gg[j], o = go[j];
    lstm_pointwise_forward(i, f, gv, o, cp[j], c[j], h[j]);
    gi[j] = i;
    gf[j] = f;
    gg[j] = gv;
    go[j] = o;
  }
}

// dh = da + db, either of which may be absent (null); dc is carried in place.
template <bool HasA, bool HasB, class T>
PYNN_ALWAYS_INLINE void lstm_row_backward_impl(int64_t H, const T* __restrict da, const T* __restrict db,
                                   T* __restrict dc, const T* __restrict g,
                                   const T* __restrict cp, const T* __restrict c,
                                   T* __restrict dg) {
  PYNN_IVDEP
  for (int64_t j = 0; j < H; ++j) {
    T dh = T(0);
    if constexpr (HasA) dh += da[j];
    if constexpr (HasB) dh += db[j];
    T di, df, dgg, dout;
    dc[j] = lstm_pointwise_backward(dh, dc[j], g[j], g[H + j], g[2 * H + j], g[3 * H + j], cp[j],
                                    c[j], di, df, dgg, dout);
    dg[j] = di;
    dg[H + j] = df;
    dg[2 * H + j] = dgg;
    dg[3 * H + j] = dout;
  }
}

template <class T>
PYNN_ALWAYS_INLINE void lstm_row_backward_any(int64_t H, const T* da, const T* db, T* dc, const T* g,
                                  const T* cp, const T* c, T* dg) {
  if (da && db) lstm_row_backward_impl<true, true>(H, da, db, dc, g, cp, c, dg);
  else if (da) lstm_row_backward_impl<true, false>(H, da, db, dc, g, cp, c, dg);
  else if (db) lstm_row_backward_impl<false, true>(H, da, db, dc, g, cp, c, dg);
  else lstm_row_backward_impl<false, false>(H, da, db, dc, g, cp, c, dg);
}

template <ActKind K, class T>
PYNN_ALWAYS_INLINE void rnn_row_forward_impl(int64_t H, T* __restrict y, const T* __restrict bi,
                                 const T* __restrict bh) {
  if (bi)
    for (int64_t j = 0; j < H; ++j) y[j] = rnn_pointwise_forward<K>(y[j] + bi[j] + bh[j]);
  else
    for (int64_t j = 0; j < H; ++j) y[j] = rnn_pointwise_forward<K>(y[j]);
}

template <ActKind K, class T>
PYNN_ALWAYS_INLINE void rnn_row_backward_impl(int64_t H, const T* __restrict dy, const T* __restrict dh,
                                  const T* __restrict y, T* __restrict dp) {
  if (dy)
    for (int64_t j = 0; j < H; ++j) dp[j] = rnn_pointwise_backward<K>(dy[j] + dh[j], y[j]);
  else
    for (int64_t j = 0; j < H; ++j) dp[j] = rnn_pointwise_backward<K>(dh[j], y[j]);
}

// Non-template entry points, one per dtype, so that target_clones can version them.
#define PYNN_RNN_ROWS(T)                                                                          \
  PYNN_CPU_MULTIVERSION void lstm_row_forward(int64_t H, T* g, const T* bi, const T* bh,         \
                                              const T* cp, T* c, T* h) {                          \
    lstm_row_forward_impl<T>(H, g, bi, bh, cp, c, h);                                             \
  }                                                                                               \
  PYNN_CPU_MULTIVERSION void lstm_row_backward(int64_t H, const T* da, const T* db, T* dc,       \
                                               const T* g, const T* cp, const T* c, T* dg) {      \
    lstm_row_backward_any<T>(H, da, db, dc, g, cp, c, dg);                                        \
  }                                                                                               \
  PYNN_CPU_MULTIVERSION void rnn_row_forward(int kind, int64_t H, T* y, const T* bi,             \
                                             const T* bh) {                                       \
    if (kind == static_cast<int>(ActKind::ReLU)) rnn_row_forward_impl<ActKind::ReLU, T>(H, y, bi, bh); \
    else rnn_row_forward_impl<ActKind::Tanh, T>(H, y, bi, bh);                                     \
  }                                                                                               \
  PYNN_CPU_MULTIVERSION void rnn_row_backward(int kind, int64_t H, const T* dy, const T* dh,     \
                                              const T* y, T* dp) {                                \
    if (kind == static_cast<int>(ActKind::ReLU)) rnn_row_backward_impl<ActKind::ReLU, T>(H, dy, dh, y, dp); \
    else rnn_row_backward_impl<ActKind::Tanh, T>(H, dy, dh, y, dp);                                \
  }
PYNN_RNN_ROWS(float)
PYNN_RNN_ROWS(double)
#undef PYNN_RNN_ROWS

template <class T>
struct CpuBackend {
  void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t a_rs, int64_t a_cs, const T* B,
            int64_t b_rs, int64_t b_cs, T beta, T* C, int64_t c_rs) {
    gemm_cpu<T>(M, N, K, T(1), A, a_rs, a_cs, B, b_rs, b_cs, beta, C, c_rs);
  }

  void lstm_step_forward(int64_t batch, int64_t H, Mat<T> g, const T* bi, const T* bh,
                         Mat<T> c_prev, Mat<T> c, Mat<T> h) {
    parallel_for(0, batch, row_grain(4 * H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        lstm_row_forward(H, g.row(b), bi, bh, c_prev.row(b), c.row(b), h.row(b));
    });
  }

  // dh_a and dh_b (either may be null) add up to the gradient reaching h.
  void lstm_step_backward(int64_t batch, int64_t H, Mat<T> dh_a, Mat<T> dh_b, Mat<T> dc,
                          Mat<T> g, Mat<T> c_prev, Mat<T> c, Mat<T> dg) {
    parallel_for(0, batch, row_grain(4 * H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        lstm_row_backward(H, dh_a.p ? dh_a.row(b) : nullptr, dh_b.p ? dh_b.row(b) : nullptr,
                          dc.row(b), g.row(b), c_prev.row(b), c.row(b), dg.row(b));
    });
  }

  void rnn_step_forward(int kind, int64_t batch, int64_t H, Mat<T> y, const T* bi, const T* bh) {
    parallel_for(0, batch, row_grain(H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) rnn_row_forward(kind, H, y.row(b), bi, bh);
    });
  }

  void rnn_step_backward(int kind, int64_t batch, int64_t H, Mat<T> dy, Mat<T> dh, Mat<T> y,
                         Mat<T> dpre) {
    parallel_for(0, batch, row_grain(H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        rnn_row_backward(kind, H, dy.p ? dy.row(b) : nullptr, dh.row(b), y.row(b), dpre.row(b));
    });
  }

  void add(int64_t rows, int64_t cols, Mat<T> a, Mat<T> b, Mat<T> out) {
    for (int64_t r = 0; r < rows; ++r) {
      const T* ar = a.p ? a.row(r) : nullptr;
      const T* br = b.p ? b.row(r) : nullptr;
      T* o = out.row(r);
      for (int64_t j = 0; j < cols; ++j) o[j] = (ar ? ar[j] : T(0)) + (br ? br[j] : T(0));
    }
  }

  void copy(int64_t rows, int64_t cols, Mat<T> src, Mat<T> dst) {
    if (src.p == dst.p && src.rs == dst.rs) return;  // a cell's h_n is its output step itself
    for (int64_t r = 0; r < rows; ++r) {
      T* d = dst.row(r);
      if (src.p)
        std::copy(src.row(r), src.row(r) + cols, d);
      else
        std::fill(d, d + cols, T(0));
    }
  }

  // Column sums over every (step, batch) row, accumulated in double per column block.
  void col_sum(int64_t steps, int64_t batch, int64_t cols, const Seq<T>& a, T* out1, T* out2) {
    parallel_for(0, cols, 256, [&](int64_t j0, int64_t j1) {
      std::vector<double> acc(static_cast<size_t>(j1 - j0), 0.0);
      for (int64_t t = 0; t < steps; ++t)
        for (int64_t b = 0; b < batch; ++b) {
          const T* r = a.at(t).row(b) + j0;
          for (int64_t j = 0; j < j1 - j0; ++j) acc[j] += r[j];
        }
      for (int64_t j = j0; j < j1; ++j) out1[j] = out2[j] = static_cast<T>(acc[j - j0]);
    });
  }
};

}  // namespace
}  // namespace rnn

// ---- entry points ------------------------------------------------------------------------------

void lstm_forward_cpu(const TensorView& x, const TensorView& h0, const TensorView& c0,
                      const TensorView& w_ih, const TensorView& w_hh, const TensorView& b_ih,
                      const TensorView& b_hh, const TensorView& w_hr, const TensorView& y,
                      const TensorView& hn, const TensorView& cn, const TensorView& gates,
                      const TensorView& cs, const TensorView& hr, bool reverse) {
  rnn::check_lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, y, hn, cn, gates, cs, hr);
  check_device(x, Device::CPU, "lstm_forward", "input");
  dispatch_floating(x.dtype, "lstm_forward", "input", [&](auto tag) {
    using T = decltype(tag);
    rnn::CpuBackend<T> be;
    rnn::lstm_forward_loop<T>(be, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, y, hn, cn, gates, cs,
                              hr, reverse);
  });
}

void lstm_backward_cpu(const TensorView& x, const TensorView& h0, const TensorView& c0,
                       const TensorView& w_ih, const TensorView& w_hh, const TensorView& w_hr,
                       const TensorView& y, const TensorView& gates, const TensorView& cs,
                       const TensorView& hr, const TensorView& grad_y, const TensorView& grad_hn,
                       const TensorView& grad_cn, const TensorView& dgates, const TensorView& dy,
                       const TensorView& dhr, const TensorView& grad_x, const TensorView& grad_h0,
                       const TensorView& grad_c0, const TensorView& grad_w_ih,
                       const TensorView& grad_w_hh, const TensorView& grad_b_ih,
                       const TensorView& grad_b_hh, const TensorView& grad_w_hr, bool reverse,
                       bool accumulate_grad_x) {
  rnn::check_lstm_backward(x, h0, c0, w_ih, w_hh, w_hr, y, gates, cs, hr, grad_y, grad_hn,
                           grad_cn, dgates, dy, dhr, grad_x, grad_h0, grad_c0, grad_w_ih,
                           grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr);
  check_device(x, Device::CPU, "lstm_backward", "input");
  dispatch_floating(x.dtype, "lstm_backward", "input", [&](auto tag) {
    using T = decltype(tag);
    rnn::CpuBackend<T> be;
    rnn::lstm_backward_loop<T>(be, x, h0, c0, w_ih, w_hh, w_hr, y, gates, cs, hr, grad_y,
                               grad_hn, grad_cn, dgates, dy, dhr, grad_x, grad_h0, grad_c0,
                               grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr, reverse,
                               accumulate_grad_x);
  });
}

void rnn_forward_cpu(const TensorView& x, const TensorView& h0, const TensorView& w_ih,
                     const TensorView& w_hh, const TensorView& b_ih, const TensorView& b_hh,
                     const TensorView& y, const TensorView& hn, int kind, bool reverse) {
  rnn::check_rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, y, hn, kind);
  check_device(x, Device::CPU, "rnn_forward", "input");
  dispatch_floating(x.dtype, "rnn_forward", "input", [&](auto tag) {
    using T = decltype(tag);
    rnn::CpuBackend<T> be;
    rnn::rnn_forward_loop<T>(be, x, h0, w_ih, w_hh, b_ih, b_hh, y, hn, kind, reverse);
  });
}

void rnn_backward_cpu(const TensorView& x, const TensorView& h0, const TensorView& w_ih,
                      const TensorView& w_hh, const TensorView& y, const TensorView& grad_y,
                      const TensorView& grad_hn, const TensorView& dgates,
                      const TensorView& grad_x, const TensorView& grad_h0,
                      const TensorView& grad_w_ih, const TensorView& grad_w_hh,
                      const TensorView& grad_b_ih, const TensorView& grad_b_hh, int kind,
                      bool reverse, bool accumulate_grad_x) {
  rnn::check_rnn_backward(x, h0, w_ih, w_hh, y, grad_y, grad_hn, dgates, grad_x, grad_h0,
                          grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, kind);
  check_device(x, Device::CPU, "rnn_backward", "input");
  dispatch_floating(x.dtype, "rnn_backward", "input", [&](auto tag) {
    using T = decltype(tag);
    rnn::CpuBackend<T> be;
    rnn::rnn_backward_loop<T>(be, x, h0, w_ih, w_hh, y, grad_y, grad_hn, dgates, grad_x,
                              grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, kind, reverse,
                              accumulate_grad_x);
  });
}

void rnn_dropout_cpu(const TensorView& input, const TensorView& mask, const TensorView& output,
                     double scale) {
  rnn::check_dropout(input, mask, output);
  check_device(input, Device::CPU, "rnn_dropout", "input");
  dispatch_floating(input.dtype, "rnn_dropout", "input", [&](auto tag) {
    using T = decltype(tag);
    const T* x = input.ptr<T>();
    const T* m = mask.ptr<T>();
    T* y = output.ptr<T>();
    const T s = static_cast<T>(scale);
    parallel_for(0, input.numel(), 32768, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) y[i] = x[i] * m[i] * s;
    });
  });
}

}  // namespace pynn
