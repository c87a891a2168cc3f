// CPU backend of the RNN / LSTM time loops (csrc/ops/rnn_loop.h): GEMMs go to gemm_cpu, the
// fused pointwise step of each time step is one pass over [batch, hidden] on the thread pool.
// The argument checks shared with the CUDA backend live here too.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "core/dispatch.h"
#include "core/macros.h"
#include "core/parallel.h"
#include "cpu/aligned_buffer.h"
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
  // The workspaces hold every step, or (a forward without backward) a ring of S of them.
  check_dim(gates, 3, op, "gates");
  const int64_t S = gates.size(0);
  PYNN_CHECK(S == T || (S >= 2 && S < T), op, ": gates must hold all ", T,
             " steps or a ring of 2 to ", T - 1, " of them, got ", S);
  c(gates, "gates", {S, B, 4 * H});
  c(cs, "cell_states", {S, B, H});
  if (w_hr.numel() > 0) c(hr, "hr", {S, B, H});
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

// n units of one batch row of the LSTM step: gate k of unit j is g[k * gs + j] (gs = H for a
// whole row, a slice of the units otherwise), its biases bi[k * H + j] and bh[k * H + j]. g
// holds the pre-activations and receives the activated gates. bi / bh are both null without
// bias.
template <bool HasBias, class T>
PYNN_ALWAYS_INLINE void lstm_row_forward_pass(int64_t n, int64_t gs, int64_t H, T* __restrict g,
                                              const T* __restrict bi, const T* __restrict bh,
                                              const T* __restrict cp, T* __restrict c,
                                              T* __restrict h) {
  T* __restrict gi = g;
  T* __restrict gf = g + gs;
  T* __restrict gg = g + 2 * gs;
  T* __restrict go = g + 3 * gs;
  // The biases join the pre-activations in the same pass as the gate math: a separate pass
  // adding them in place cost a third of this function (perf, LSTMCell B32 x H256).
  PYNN_IVDEP
  for (int64_t j = 0; j < n; ++j) {
    T i = gi[j], f = gf[j], gv = gg[j], o = go[j];
    if constexpr (HasBias) {
      i += bi[j] + bh[j];
      f += bi[H + j] + bh[H + j];
      gv += bi[2 * H + j] + bh[2 * H + j];
      o += bi[3 * H + j] + bh[3 * H + j];
    }
    lstm_pointwise_forward(i, f, gv, o, cp[j], c[j], h[j]);
    gi[j] = i;
    gf[j] = f;
    gg[j] = gv;
    go[j] = o;
  }
}

template <class T>
PYNN_ALWAYS_INLINE void lstm_row_forward_impl(int64_t n, int64_t gs, int64_t H, T* g,
                                              const T* bi, const T* bh, const T* cp, T* c, T* h) {
  if (bi)
    lstm_row_forward_pass<true>(n, gs, H, g, bi, bh, cp, c, h);
  else
    lstm_row_forward_pass<false>(n, gs, H, g, bi, bh, cp, c, h);
}

// dh = da + db, either of which may be absent (null); dc is carried in place. Gate strides as
// in lstm_row_forward_impl, for the saved gates g and their gradients dg alike.
template <bool HasA, bool HasB, class T>
PYNN_ALWAYS_INLINE void lstm_row_backward_impl(int64_t n, int64_t gs, const T* __restrict da,
                                               const T* __restrict db, T* __restrict dc,
                                               const T* __restrict g, const T* __restrict cp,
                                               const T* __restrict c, T* __restrict dg) {
  PYNN_IVDEP
  for (int64_t j = 0; j < n; ++j) {
    T dh = T(0);
    if constexpr (HasA) dh += da[j];
    if constexpr (HasB) dh += db[j];
    T di, df, dgg, dout;
    dc[j] = lstm_pointwise_backward(dh, dc[j], g[j], g[gs + j], g[2 * gs + j], g[3 * gs + j],
                                    cp[j], c[j], di, df, dgg, dout);
    dg[j] = di;
    dg[gs + j] = df;
    dg[2 * gs + j] = dgg;
    dg[3 * gs + j] = dout;
  }
}

template <class T>
PYNN_ALWAYS_INLINE void lstm_row_backward_any(int64_t n, int64_t gs, const T* da, const T* db,
                                              T* dc, const T* g, const T* cp, const T* c, T* dg) {
  if (da && db) lstm_row_backward_impl<true, true>(n, gs, da, db, dc, g, cp, c, dg);
  else if (da) lstm_row_backward_impl<true, false>(n, gs, da, db, dc, g, cp, c, dg);
  else if (db) lstm_row_backward_impl<false, true>(n, gs, da, db, dc, g, cp, c, dg);
  else lstm_row_backward_impl<false, false>(n, gs, da, db, dc, g, cp, c, dg);
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
  PYNN_CPU_MULTIVERSION void lstm_row_forward(int64_t n, int64_t gs, int64_t H, T* g,          \
                                              const T* bi, const T* bh, const T* cp, T* c, T* h) { \
    lstm_row_forward_impl<T>(n, gs, H, g, bi, bh, cp, c, h);                                      \
  }                                                                                               \
  PYNN_CPU_MULTIVERSION void lstm_row_backward(int64_t n, int64_t gs, const T* da, const T* db,  \
                                               T* dc, const T* g, const T* cp, const T* c,        \
                                               T* dg) {                                           \
    lstm_row_backward_any<T>(n, gs, da, db, dc, g, cp, c, dg);                                    \
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

// acc[j] += rows[r * rs + j] for r < n_rows, j < n: a block of a bias gradient's column sums,
// kept in double. Versioned so that the float-to-double widening runs at the CPU's vector width
// (baseline x86-64 does two lanes; the sum took 1.2 ms of a 34 ms LSTM backward that way).
#define PYNN_RNN_SUM_ROWS(T)                                                                      \
  PYNN_CPU_MULTIVERSION void sum_rows(int64_t n_rows, int64_t n, const T* rows, int64_t rs,       \
                                      double* __restrict acc) {                                   \
    for (int64_t r = 0; r < n_rows; ++r) {                                                        \
      const T* __restrict x = rows + r * rs;                                                      \
      for (int64_t j = 0; j < n; ++j) acc[j] += static_cast<double>(x[j]);                        \
    }                                                                                             \
  }
PYNN_RNN_SUM_ROWS(float)
PYNN_RNN_SUM_ROWS(double)
#undef PYNN_RNN_SUM_ROWS

// ---- fused recurrences ---------------------------------------------------------------------
// The time loop of one layer and direction as one parallel region. Thread k of n owns a slice of
// the hidden units: it packs the rows of W_hh that produce its units' i, f, g, o columns once,
// keeps them in its core's cache for all steps, and per step multiplies h_{t-1} by them into
// its gate columns, then applies the cell update to its units. The next step needs all of h_t,
// so the threads meet at one barrier per step (two with a projection, whose GEMM needs all of
// hr_t). The backward mirrors it: each thread forms the gate gradients of its units, and after
// the barrier the slice of dh_{t-1} of those same units, which is all its next step reads, so it
// too needs one barrier per step. Compared with a gemm_cpu and a parallel_for per step, this
// packs W_hh once instead of every step and wakes the pool once per sequence instead of twice
// per step (a wake-up costs about as much as a step of B32 x H256).

// Below this many flops of recurrent GEMM per step and thread, a second thread costs more in
// barrier waits than it saves (measured on B4 x H64, about 0.2 MFLOP per step: 1 thread wins).
constexpr double kMinStepFlopsPerThread = 2.5e5;

// PYNN_RNN_THREADS=n overrides the estimate (still at most the pool's size): the tests use it to
// split small layers unevenly over several threads.
int recurrence_threads(double step_flops) {
  if (in_parallel_region()) return 1;
  double n = std::max(1.0, step_flops / kMinStepFlopsPerThread);
  if (const char* env = std::getenv("PYNN_RNN_THREADS"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (*end != '\0' || v < 1)
      throw ValueError(detail::concat("rnn: PYNN_RNN_THREADS must be a positive integer, got '",
                                      env, "'"));
    n = static_cast<double>(v);
  }
  return static_cast<int>(std::min<double>(get_num_threads(), n));
}

// Units [first, second) of n owned by thread k of nt: whole 32-unit blocks (one AVX-512 float
// panel of the GEMM) when there are enough, so that only the last slice has a partial panel.
std::pair<int64_t, int64_t> unit_slice(int64_t n, int nt, int k) {
  const int64_t grain = n >= 32 * nt ? 32 : n >= 8 * nt ? 8 : 1;
  const int64_t chunks = (n + grain - 1) / grain;
  const int64_t c0 = chunks * k / nt, c1 = chunks * (k + 1) / nt;
  return {std::min(n, c0 * grain), std::min(n, c1 * grain)};
}

// Which of `choices` the environment variable `name` holds (its index), or -1 when it is unset
// or empty; any other value raises a ValueError that lists the choices.
int env_choice(const char* name, std::initializer_list<const char*> choices) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return -1;
  int i = 0;
  std::string listed;
  for (const char* c : choices) {
    if (std::strcmp(env, c) == 0) return i;
    listed += (i++ == 0 ? "'" : ", '") + std::string(c) + "'";
  }
  throw ValueError(detail::concat("rnn: ", name, " must be one of ", listed, ", got '", env, "'"));
}

bool use_step_loop() { return env_choice("PYNN_RNN_LOOP", {"fused", "steps"}) == 1; }

size_t round64(size_t elems, size_t size) { return (elems * size + 63) / 64 * 64 / size; }

// Lays out the scratch of a region whose thread k of nt needs weights(nt, k) elements of packed
// weights and a_elems of A panels, for any team size nt <= planned that parallel_region may
// grant (fewer threads may need more weight scratch: their slices can end in more partial
// panels).
template <class T, class WeightsFn>
struct RegionScratch {
  const WeightsFn& weights;
  size_t a_elems, capacity = 0;
  T* base;

  RegionScratch(int planned, size_t a, const WeightsFn& w) : weights(w) {
    a_elems = round64(a, sizeof(T));
    for (int nt = 1; nt <= planned; ++nt) {
      size_t total = 0;
      for (int k = 0; k < nt; ++k) total += round64(weights(nt, k), sizeof(T));
      capacity = std::max(capacity, total);
    }
    // The calling thread's (cpu/aligned_buffer.h): a cell driven step by step from Python
    // would otherwise map and fault in fresh pages per call.
    thread_local cpu::AlignedBuffer scratch;
    base = scratch.get<T>(capacity + static_cast<size_t>(planned) * a_elems);
  }
  T* packed_weights(int nt, int k) const {
    size_t off = 0;
    for (int i = 0; i < k; ++i) off += round64(weights(nt, i), sizeof(T));
    return base + off;
  }
  T* a_panels(int k) const { return base + capacity + static_cast<size_t>(k) * a_elems; }
};

// The barrier of a region as its body sees it: no-ops when the region runs on one thread.
struct Sync {
  SpinBarrier& barrier;
  int nt;
  unsigned arrive() const { return nt > 1 ? barrier.arrive() : 0u; }
  void wait(unsigned phase) const {
    if (nt > 1) barrier.wait(phase);
  }
  void operator()() const { wait(arrive()); }
};

template <class T, class WeightsFn, class Body>
void run_region(int planned, size_t a_elems, const WeightsFn& weights, const Body& body) {
  RegionScratch<T, WeightsFn> scratch(planned, a_elems, weights);
  SpinBarrier barrier;
  parallel_region(planned, [&](int k, int nt) {
    barrier.join(nt);
    body(k, nt, scratch.packed_weights(nt, k), scratch.a_panels(k), Sync{barrier, nt});
  });
}

// Whether each thread also computes its gates' share of the input projection inside the loop, a
// step ahead: the input GEMM of step t + 1 fills the wait at step t's barrier, and the gates
// never make a round trip through memory. It pays while each step finds the thread's packed
// W_ih and W_hh slices in cache. On the Zen 4 this was measured on (1 MB L2 per core, 32 MB L3;
// 2 threads, T = 100, H = 256), the fused loop was 8-13% faster than one GEMM over all steps
// with slices of 0.9-2.6 MB per thread (I = 192 to 1024, batch 4 to 32), and even at 4.7 MB
// (I = 2048). Past kFusedSliceBytes per thread, or past kFusedTotalBytes in all (weights that
// every step would stream from memory again), one GEMM over all steps before the loop streams
// W_ih once instead; slices that fit an L2 are fused whatever the total.
// PYNN_RNN_INPUT_GEMM=step or =whole forces one way (the tests cover both on small layers).
constexpr double kFusedL2Bytes = 800e3;
constexpr double kFusedSliceBytes = 3e6;
constexpr double kFusedTotalBytes = 16e6;

template <class T>
bool fuse_input(int threads, int64_t gates, int64_t I, int64_t K_rec) {
  switch (env_choice("PYNN_RNN_INPUT_GEMM", {"auto", "step", "whole"})) {
    case 1: return true;
    case 2: return false;
    default: break;  // unset or auto: the size rule
  }
  const double total = double(gates) * double(I + K_rec) * sizeof(T), slice = total / threads;
  return slice <= kFusedL2Bytes || (slice <= kFusedSliceBytes && total <= kFusedTotalBytes);
}

// Rows [r0, r0 + n) of a weight as GemmPacking::multiply_rows reads them: in place when its
// columns have unit stride (the usual case, so nothing is packed), else copied row-major to
// *dst, which then moves past the copy.
template <class T>
Weight<T> weight_rows(const Weight<T>& w, int64_t r0, int64_t n, int64_t K, T** dst) {
  if (w.cs == 1 || K <= 1) return {w.p + r0 * w.rs, w.rs, 1};
  T* out = *dst;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t k = 0; k < K; ++k) out[r * K + k] = w.p[(r0 + r) * w.rs + k * w.cs];
  *dst += round64(static_cast<size_t>(n * K), sizeof(T));
  return {out, K, 1};
}

template <class T>
size_t weight_rows_size(const Weight<T>& w, int64_t n, int64_t K) {
  return w.cs == 1 || K <= 1 ? 0 : round64(static_cast<size_t>(n * K), sizeof(T));
}

// The fused forward loops' per-thread operands. Gate block q (of `blocks`: 4 for an LSTM, 1 for
// an Elman RNN) of unit u0 + j is row q * H + u0 + j of a weight, i.e. column q * H + u0 + j of
// W^T: pack_gate_rows packs those K x nu columns of each block, block q at dst + q * stride.
template <class T>
void pack_gate_rows(const GemmPacking<T>& gp, const Weight<T>& w, int64_t K, int64_t H,
                    int blocks, int64_t u0, int64_t nu, T* dst, size_t stride) {
  for (int q = 0; q < blocks; ++q)
    gp.pack_b(K, nu, w.p + (q * H + u0) * w.rs, w.cs, w.rs, dst + q * stride);
}

// One step's input projection for a thread's units, from W_ih packed by pack_gate_rows:
// out[:, q * H + u0 + j] = x @ W_ih[q * H + u0 + j]^T for every block q (Ap: A-panel scratch).
template <class T>
void project_step_inputs(const GemmPacking<T>& gp, Mat<T> x, int64_t B, int64_t I, int64_t H,
                         int blocks, int64_t u0, int64_t nu, const T* Wi, size_t stride,
                         Mat<T> out, T* Ap) {
  gp.pack_a(B, I, x.p, x.rs, 1, Ap);
  for (int q = 0; q < blocks; ++q)
    gp.multiply(B, nu, I, T(1), Ap, Wi + q * stride, T(0), out.p + q * H + u0, out.rs);
}

// One step without a projection (an LSTMCell call, or a sequence of length one). Nothing
// outlives the call to amortise a packing of W_hh over, and packing it cost about as much as
// a fifth of the step, so each thread reads its units' rows of W_ih and W_hh in place
// (GemmPacking::multiply_rows) and forms both products of its gates in one pass. A thread
// needs only the inputs, so the step has no barrier. LSTMCell loop B32 x 128 -> 256, 100 steps,
// same process: 20.1 ms packed, 17.0 ms in place. Sequences keep their once-packed W_hh: run
// in place, T100 measured 15.7 against 14.1 ms, the transposed tiles going out in 32-byte
// pieces of 32 rows into gates that are fresh memory at every step.
// The batch is the vector operand here, so a batch that leaves lanes idle goes to the packed
// path: LSTMCell B4 x 32 -> 64 ran 0.86x torch in place (28 of 32 lanes idle) against 1.03x.
template <class T>
bool single_step_in_place(int64_t batch) {
  const int nr = gemm_panel_shape<T>().nr;
  return 8 * batch >= 7 * ((batch + nr - 1) / nr * nr);  // at most 1 lane in 8 idle
}

// The region of one step with the weights in place: thread k owns units [u0, u0 + nu) of H,
// packs X^T and h0^T, and writes rows q * H + u0 ... of each of the `blocks` gate blocks:
// out[:, q * H + u0 + j] = x @ W_ih[q * H + u0 + j]^T + h0 @ W_hh[q * H + u0 + j]^T. Then
// pointwise(u0, nu, g, gs) finishes its units from g, where gate q of unit u0 + j in row b is
// g.row(b)[q * gs + j]; a thread needs only the inputs, so there is no barrier. With own_out
// (no backward reads the gates), g is the thread's own [B][blocks][nu] scratch instead of its
// slices of out (see OwnBuffers below), and out is not written.
template <class T, class Pointwise>
void in_place_step(int64_t B, int64_t I, int64_t H, int blocks, const Weight<T>& w_ih,
                   const Weight<T>& w_hh, Mat<T> x, Mat<T> h0, Mat<T> out, bool own_out,
                   const Pointwise& pointwise) {
  const GemmPacking<T> gp;
  const int planned = recurrence_threads(2.0 * B * blocks * H * (I + H));
  auto own_size = [&](int64_t nu) {
    return own_out ? round64(static_cast<size_t>(B * blocks * nu), sizeof(T)) : size_t(0);
  };
  auto weights = [&](int nt, int k) {
    const auto [u0, u1] = unit_slice(H, nt, k);
    return own_size(u1 - u0) +
           blocks * (weight_rows_size(w_ih, u1 - u0, I) + weight_rows_size(w_hh, u1 - u0, H));
  };
  const size_t x_in = round64(gp.x_size(B, I), sizeof(T));
  run_region<T>(planned, x_in + gp.x_size(B, H), weights,
                [&](int k, int nt, T* W, T* Xp, const Sync&) {
    const auto [u0, u1] = unit_slice(H, nt, k);
    const int64_t nu = u1 - u0;
    if (nu == 0) return;
    T* Xh = Xp + x_in;
    const Mat<T> g = own_out ? Mat<T>{W, blocks * nu} : Mat<T>{out.p + u0, out.rs};
    const int64_t gs = own_out ? nu : H;
    W += own_size(nu);
    gp.pack_x(B, I, x.p, x.rs, 1, Xp);
    gp.pack_x(B, H, h0.p, h0.rs, 1, Xh);
    for (int q = 0; q < blocks; ++q) {
      const Weight<T> wi = weight_rows(w_ih, q * H + u0, nu, I, &W);
      const Weight<T> wh = weight_rows(w_hh, q * H + u0, nu, H, &W);
      const typename GemmPacking<T>::Term terms[2] = {{wi.p, wi.rs, Xp, I}, {wh.p, wh.rs, Xh, H}};
      gp.multiply_rows(B, nu, terms, 2, g.p + q * gs, g.rs);
    }
    pointwise(u0, nu, g, gs);
  });
}

template <class T>
void lstm_forward_single_step(const LstmForwardSteps<T>& a) {
  const Mat<T> c = a.C.at(0), h = a.Y.at(0);
  in_place_step<T>(a.batch, a.I, a.H, 4, a.w_ih, a.w_hh, a.X.at(0), a.h0, a.G.at(0), !a.saved,
                   [&](int64_t u0, int64_t nu, Mat<T> g, int64_t gs) {
    const T* bi = a.bi ? a.bi + u0 : nullptr;
    const T* bh = a.bh ? a.bh + u0 : nullptr;
    for (int64_t b = 0; b < a.batch; ++b)
      lstm_row_forward(nu, gs, a.H, g.row(b), bi, bh, a.c0.row(b) + u0, c.row(b) + u0,
                       h.row(b) + u0);
  });
}

// A thread's units' gates and cells without a backward to read them (a.saved false): in buffers
// of the thread's own, [B][4][nu] gates and [B][nu] cells, instead of its slices of the shared
// [B, 4H] and [B, H] rows. Each shared row interleaves the threads' slices, 512 bytes apart at
// H = 256, and writing them kept cache lines moving between the cores; on this machine's
// virtual CPUs that cost grew sixfold whenever the two landed on distant cores (a cache-line
// round trip of 350 ns rather than 55), and the 2-thread T100 x B32 x 128 -> 256 inference
// forward went from 13.5 to 20.4 ms there, torch's from 13.1 to 15.0. With own buffers it took
// 12.7-13.3 ms with near cores and 13.3 against 20.8 in a measured run with distant ones (the
// placement changes by itself from one minute to the next). The cells' last step still goes to
// C, where the caller reads c_n (and the next run of steps its c_prev). Where the input
// projection ran as one GEMM before the loop, each step copies the thread's slices of it into
// the own gates (read once, never written back). With a backward to follow, copying the own
// buffers out at every step cost back the gain.
template <class T>
struct OwnBuffers {
  T* g = nullptr;      // [B][4][nu]
  T* c[2] = {};        // [B][nu], steps alternate between them

  static size_t gates_size(int64_t B, int64_t nu) {
    return round64(static_cast<size_t>(B * 4 * nu), sizeof(T));
  }
  static size_t cells_size(int64_t B, int64_t nu) {
    return round64(static_cast<size_t>(B * nu), sizeof(T));
  }
  // Elements a thread needs at `at` (none when a backward reads the shared workspaces).
  static size_t size(const LstmForwardSteps<T>& a, int64_t nu) {
    return a.saved ? 0 : gates_size(a.batch, nu) + 2 * cells_size(a.batch, nu);
  }
  OwnBuffers(const LstmForwardSteps<T>& a, int64_t nu, T* at) {
    if (a.saved) return;
    g = at;
    c[0] = g + gates_size(a.batch, nu);
    c[1] = c[0] + cells_size(a.batch, nu);
  }
};

template <class T, class Be>
void lstm_forward_fused(Be& be, const LstmForwardSteps<T>& a) {
  const int64_t B = a.batch, I = a.I, H = a.H, P = a.P;
  const bool proj = a.w_hr.p != nullptr;
  const GemmPacking<T> gp;
  const int planned = recurrence_threads(2.0 * B * 4 * H * P + (proj ? 2.0 * B * P * H : 0.0));
  const bool fuse = fuse_input<T>(planned, 4 * H, I, P);
  auto weights = [&](int nt, int k) {
    const auto [u0, u1] = unit_slice(H, nt, k);
    size_t n = 4 * round64(gp.b_size(P, u1 - u0), sizeof(T));
    if (fuse) n += 4 * round64(gp.b_size(I, u1 - u0), sizeof(T));
    if (proj) {
      const auto [p0, p1] = unit_slice(P, nt, k);
      n += round64(gp.b_size(H, p1 - p0), sizeof(T));
    }
    return n + OwnBuffers<T>::size(a, u1 - u0);
  };
  // Steps [s0, s1) as one region, the recurrent weights packed once for them all.
  auto region = [&](int64_t s0, int64_t s1) {
    run_region<T>(planned, gp.a_size(B, std::max({P, H, fuse ? I : int64_t(0)})), weights,
                  [&](int k, int nt, T* W, T* Ap, const Sync& sync) {
      const auto [u0, u1] = unit_slice(H, nt, k);
      const auto [p0, p1] = unit_slice(P, nt, k);
      const int64_t nu = u1 - u0, np = p1 - p0;
      const size_t hsz = round64(gp.b_size(P, nu), sizeof(T));
      const size_t isz = fuse ? round64(gp.b_size(I, nu), sizeof(T)) : 0;
      T* Wi = W + 4 * hsz;
      T* Wr = Wi + 4 * isz;
      pack_gate_rows(gp, a.w_hh, P, H, 4, u0, nu, W, hsz);
      if (fuse) pack_gate_rows(gp, a.w_ih, I, H, 4, u0, nu, Wi, isz);
      if (proj) gp.pack_b(H, np, a.w_hr.p + p0 * a.w_hr.rs, a.w_hr.cs, a.w_hr.rs, Wr);
      const OwnBuffers<T> own(a, nu, Wr + (proj ? round64(gp.b_size(H, np), sizeof(T)) : 0));
      const T* bi = a.bi ? a.bi + u0 : nullptr;
      const T* bh = a.bh ? a.bh + u0 : nullptr;
      auto time_of = [&](int64_t s) { return a.reverse ? a.steps - 1 - s : s; };
      // Step s's gates and cells of this thread's units: gate q of unit u0 + j in row b is
      // gates(s).row(b)[q * gs + j], its cell cells(s).row(b)[j].
      const int64_t gs = own.g ? nu : H;
      auto gates = [&](int64_t s) -> Mat<T> {
        if (own.g) return {own.g, 4 * nu};
        const Mat<T> m = a.G.at(time_of(s));
        return {m.p + u0, m.rs};
      };
      auto cells = [&](int64_t s) -> Mat<T> {
        if (own.c[0]) return {own.c[s & 1], nu};
        const Mat<T> m = a.C.at(time_of(s));
        return {m.p + u0, m.rs};
      };
      auto input_projection = [&](int64_t s) {
        if (fuse && nu > 0)
          project_step_inputs(gp, a.X.at(time_of(s)), B, I, gs, 4, 0, nu, Wi, isz, gates(s), Ap);
      };
      input_projection(s0);
      Mat<T> h_prev = s0 == 0 ? a.h0 : a.Y.at(time_of(s0 - 1));
      Mat<T> c_prev = s0 == 0 ? a.c0 : a.C.at(time_of(s0 - 1));
      c_prev.p += u0;
      for (int64_t s = s0; s < s1; ++s) {
        const int64_t t = time_of(s);
        const Mat<T> g = gates(s), c = cells(s), h = (proj ? a.HR : a.Y).at(t);
        if (nu > 0) {
          if (own.g && !fuse) {  // the projection computed before the loop
            const Mat<T> x = a.G.at(t);
            for (int64_t b = 0; b < B; ++b)
              for (int q = 0; q < 4; ++q)
                std::copy(x.row(b) + q * H + u0, x.row(b) + q * H + u1, g.row(b) + q * nu);
          }
          gp.pack_a(B, P, h_prev.p, h_prev.rs, 1, Ap);
          for (int q = 0; q < 4; ++q)
            gp.multiply(B, nu, P, T(1), Ap, W + q * hsz, T(1), g.p + q * gs, g.rs);
          for (int64_t b = 0; b < B; ++b)
            lstm_row_forward(nu, gs, H, g.row(b), bi, bh, c_prev.row(b), c.row(b),
                             h.row(b) + u0);
        }
        if (proj) {
          sync();  // the projection reads all of hr_t
          if (np > 0) {
            gp.pack_a(B, H, h.p, h.rs, 1, Ap);
            gp.multiply(B, np, H, T(1), Ap, Wr, T(0), a.Y.at(t).p + p0, a.Y.bs);
          }
        }
        // The next step reads all of h_t; its input projection does not, so it fills the wait.
        const unsigned phase = sync.arrive();
        if (s + 1 < s1) input_projection(s + 1);
        sync.wait(phase);
        h_prev = a.Y.at(t);
        c_prev = c;
      }
      if (own.c[0] && s1 > s0) {  // the last cells, for c_n and the next run of steps
        const Mat<T> last = a.C.at(time_of(s1 - 1));
        for (int64_t b = 0; b < B; ++b)
          std::copy(c_prev.row(b), c_prev.row(b) + nu, last.row(b) + u0);
      }
    });
  };
  if (fuse) {
    region(0, a.steps);
    return;
  }
  // The input projections as GEMMs over all steps before the loop, or over a ring's worth of
  // steps before each run of them.
  for (int64_t s = 0; s < a.steps;) {
    const StepRun run = step_run(s, a.steps, a.G.slots, a.reverse);
    lstm_input_projection(be, a, run);
    region(run.s0, run.s1);
    s = run.s1;
  }
}

template <class T>
void lstm_backward_fused(const LstmBackwardSteps<T>& a) {
  const int64_t B = a.batch, H = a.H, P = a.P;
  const bool proj = a.w_hr.p != nullptr;
  const GemmPacking<T> gp;
  // Without a projection P == H and a thread's slice of dh is the slice of its units.
  auto weights = [&](int nt, int k) {
    const auto [u0, u1] = unit_slice(H, nt, k);
    const auto [p0, p1] = unit_slice(P, nt, k);
    size_t n = round64(gp.b_size(4 * H, p1 - p0), sizeof(T));
    if (proj) n += gp.b_size(P, u1 - u0);
    return n;
  };
  const int planned = recurrence_threads(2.0 * B * 4 * H * P + (proj ? 2.0 * B * P * H : 0.0));
  run_region<T>(planned, gp.a_size(B, std::max(4 * H, P)), weights,
                [&](int k, int nt, T* W, T* Ap, const Sync& sync) {
    const auto [u0, u1] = unit_slice(H, nt, k);
    const auto [p0, p1] = unit_slice(P, nt, k);
    const int64_t nu = u1 - u0, np = p1 - p0;
    // dh[:, p0:p1] = dG @ W_hh[:, p0:p1]; with a projection dhr[:, u0:u1] = dy @ W_hr[:, u0:u1].
    gp.pack_b(4 * H, np, a.w_hh.p + p0 * a.w_hh.cs, a.w_hh.rs, a.w_hh.cs, W);
    T* Wr = W + round64(gp.b_size(4 * H, np), sizeof(T));
    if (proj) gp.pack_b(P, nu, a.w_hr.p + u0 * a.w_hr.cs, a.w_hr.rs, a.w_hr.cs, Wr);
    for (int64_t s = a.steps - 1; s >= 0; --s) {
      const int64_t t = a.reverse ? a.steps - 1 - s : s;
      const Mat<T> c_prev = s == 0 ? a.c0 : a.C.at(a.reverse ? t + 1 : t - 1);
      const Mat<T> g = a.G.at(t), c = a.C.at(t), dg = a.dG.at(t), gy = a.GY.at(t);
      if (proj) {
        const Mat<T> dy = a.DY.at(t);
        for (int64_t b = 0; b < B; ++b) {
          T* o = dy.row(b);
          const T* d = a.dh.row(b);
          if (gy.p) {
            const T* y = gy.row(b);
            for (int64_t j = p0; j < p1; ++j) o[j] = y[j] + d[j];
          } else {
            for (int64_t j = p0; j < p1; ++j) o[j] = d[j];
          }
        }
        sync();  // dhr needs all of dy_t
        if (nu > 0) {
          gp.pack_a(B, P, dy.p, dy.rs, 1, Ap);
          gp.multiply(B, nu, P, T(1), Ap, Wr, T(0), a.dhr.p + u0, a.dhr.rs);
          for (int64_t b = 0; b < B; ++b)
            lstm_row_backward(nu, H, a.dhr.row(b) + u0, static_cast<const T*>(nullptr),
                              a.dc.row(b) + u0, g.row(b) + u0, c_prev.row(b) + u0,
                              c.row(b) + u0, dg.row(b) + u0);
        }
      } else {
        for (int64_t b = 0; b < B; ++b)
          lstm_row_backward(nu, H, gy.p ? gy.row(b) + u0 : nullptr, a.dh.row(b) + u0,
                            a.dc.row(b) + u0, g.row(b) + u0, c_prev.row(b) + u0, c.row(b) + u0,
                            dg.row(b) + u0);
      }
      sync();  // dh_{t-1} needs the gate gradients of all units
      if (np > 0) {
        gp.pack_a(B, 4 * H, dg.p, dg.rs, 1, Ap);
        gp.multiply(B, np, 4 * H, T(1), Ap, W, T(0), a.dh.p + p0, a.dh.rs);
      }
    }
  });
}

// One Elman step (an RNNCell call), the weights read in place as in lstm_forward_single_step.
template <class T>
void rnn_forward_single_step(const RnnForwardSteps<T>& a) {
  const Mat<T> y = a.Y.at(0);
  // the pre-activations go to y itself, the step's output, and become h there
  in_place_step<T>(a.batch, a.I, a.H, 1, a.w_ih, a.w_hh, a.X.at(0), a.h0, y, false,
                   [&](int64_t u0, int64_t nu, Mat<T>, int64_t) {
    const T* bi = a.bi ? a.bi + u0 : nullptr;
    const T* bh = a.bh ? a.bh + u0 : nullptr;
    for (int64_t b = 0; b < a.batch; ++b) rnn_row_forward(a.kind, nu, y.row(b) + u0, bi, bh);
  });
}

template <class T, class Be>
void rnn_forward_fused(Be& be, const RnnForwardSteps<T>& a) {
  const int64_t B = a.batch, I = a.I, H = a.H;
  const GemmPacking<T> gp;
  const int planned = recurrence_threads(2.0 * B * H * H);
  const bool fuse = fuse_input<T>(planned, H, I, H);
  if (!fuse) {
    const Weight<T> wih = a.w_ih.t();
    gemm_steps(be, a.steps, B, H, I, a.X, wih.p, wih.rs, wih.cs, T(0), a.Y);
  }
  auto weights = [&](int nt, int k) {
    const auto [u0, u1] = unit_slice(H, nt, k);
    return round64(gp.b_size(H, u1 - u0), sizeof(T)) + (fuse ? gp.b_size(I, u1 - u0) : 0);
  };
  run_region<T>(planned, gp.a_size(B, std::max(H, fuse ? I : int64_t(0))), weights,
                [&](int k, int nt, T* W, T* Ap, const Sync& sync) {
    const auto [u0, u1] = unit_slice(H, nt, k);
    const int64_t nu = u1 - u0;
    T* Wi = W + round64(gp.b_size(H, nu), sizeof(T));
    pack_gate_rows(gp, a.w_hh, H, H, 1, u0, nu, W, 0);
    if (fuse) pack_gate_rows(gp, a.w_ih, I, H, 1, u0, nu, Wi, 0);
    const T* bi = a.bi ? a.bi + u0 : nullptr;
    const T* bh = a.bh ? a.bh + u0 : nullptr;
    auto time_of = [&](int64_t s) { return a.reverse ? a.steps - 1 - s : s; };
    auto input_projection = [&](int64_t t) {
      if (fuse && nu > 0)
        project_step_inputs(gp, a.X.at(t), B, I, H, 1, u0, nu, Wi, 0, a.Y.at(t), Ap);
    };
    input_projection(time_of(0));
    Mat<T> h_prev = a.h0;
    for (int64_t s = 0; s < a.steps; ++s) {
      const int64_t t = time_of(s);
      const Mat<T> y = a.Y.at(t);
      if (nu > 0) {
        gp.pack_a(B, H, h_prev.p, h_prev.rs, 1, Ap);
        gp.multiply(B, nu, H, T(1), Ap, W, T(1), y.p + u0, y.rs);
        for (int64_t b = 0; b < B; ++b) rnn_row_forward(a.kind, nu, y.row(b) + u0, bi, bh);
      }
      const unsigned phase = sync.arrive();
      if (s + 1 < a.steps) input_projection(time_of(s + 1));
      sync.wait(phase);
      h_prev = y;
    }
  });
}

template <class T>
void rnn_backward_fused(const RnnBackwardSteps<T>& a) {
  const int64_t B = a.batch, H = a.H;
  const GemmPacking<T> gp;
  auto weights = [&](int nt, int k) {
    const auto [u0, u1] = unit_slice(H, nt, k);
    return gp.b_size(H, u1 - u0);
  };
  run_region<T>(recurrence_threads(2.0 * B * H * H), gp.a_size(B, H), weights,
                [&](int k, int nt, T* W, T* Ap, const Sync& sync) {
    const auto [u0, u1] = unit_slice(H, nt, k);
    const int64_t nu = u1 - u0;
    gp.pack_b(H, nu, a.w_hh.p + u0 * a.w_hh.cs, a.w_hh.rs, a.w_hh.cs, W);
    for (int64_t s = a.steps - 1; s >= 0; --s) {
      const int64_t t = a.reverse ? a.steps - 1 - s : s;
      const Mat<T> y = a.Y.at(t), gy = a.GY.at(t), dg = a.dG.at(t);
      for (int64_t b = 0; b < B; ++b)
        rnn_row_backward(a.kind, nu, gy.p ? gy.row(b) + u0 : nullptr, a.dh.row(b) + u0,
                         y.row(b) + u0, dg.row(b) + u0);
      sync();  // dh_{t-1} needs the gradients of all units
      if (nu > 0) {
        gp.pack_a(B, H, dg.p, dg.rs, 1, Ap);
        gp.multiply(B, nu, H, T(1), Ap, W, T(0), a.dh.p + u0, a.dh.rs);
      }
    }
  });
}

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
        lstm_row_forward(H, H, H, g.row(b), bi, bh, c_prev.row(b), c.row(b), h.row(b));
    });
  }

  // dh_a and dh_b (either may be null) add up to the gradient reaching h.
  void lstm_step_backward(int64_t batch, int64_t H, Mat<T> dh_a, Mat<T> dh_b, Mat<T> dc,
                          Mat<T> g, Mat<T> c_prev, Mat<T> c, Mat<T> dg) {
    parallel_for(0, batch, row_grain(4 * H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        lstm_row_backward(H, H, dh_a.p ? dh_a.row(b) : nullptr, dh_b.p ? dh_b.row(b) : nullptr,
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

  void lstm_forward_recurrence(const LstmForwardSteps<T>& a) {
    if (a.batch == 0) return;
    if (use_step_loop()) lstm_forward_steps(*this, a);
    else if (a.steps == 1 && a.w_hr.p == nullptr && single_step_in_place<T>(a.batch))
      lstm_forward_single_step(a);
    else lstm_forward_fused(*this, a);
  }
  // A single step (a cell's backward) has no later step to reuse the packed W_hh for, so it
  // keeps gemm_cpu's shared task queue, which tolerates a late or preempted pool thread (the
  // LSTMCell loop B32 x H256 forward+backward measured 0.60-0.68x torch with the region against
  // 0.78-0.81x without, on a machine too busy for these numbers to be more than a hint).
  void lstm_backward_recurrence(const LstmBackwardSteps<T>& a) {
    if (a.batch == 0) return;
    if (a.steps == 1 || use_step_loop()) lstm_backward_steps(*this, a);
    else lstm_backward_fused(a);
  }
  void rnn_forward_recurrence(const RnnForwardSteps<T>& a) {
    if (a.batch == 0) return;
    if (use_step_loop()) rnn_forward_steps(*this, a);
    else if (a.steps == 1 && single_step_in_place<T>(a.batch)) rnn_forward_single_step(a);
    else rnn_forward_fused(*this, a);
  }
  void rnn_backward_recurrence(const RnnBackwardSteps<T>& a) {
    if (a.batch == 0) return;
    if (a.steps == 1 || use_step_loop()) rnn_backward_steps(*this, a);
    else rnn_backward_fused(a);
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
        sum_rows(batch, j1 - j0, a.at(t).p + j0, a.bs, acc.data());
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
                      const TensorView& cs, const TensorView& hr, bool reverse, bool saved) {
  rnn::check_lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, y, hn, cn, gates, cs, hr);
  check_device(x, Device::CPU, "lstm_forward", "input");
  dispatch_floating(x.dtype, "lstm_forward", "input", [&](auto tag) {
    using T = decltype(tag);
    rnn::CpuBackend<T> be;
    rnn::lstm_forward_loop<T>(be, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, y, hn, cn, gates, cs,
                              hr, reverse, saved);
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
