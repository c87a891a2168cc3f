#include "ops/activation.h"

#include "core/dispatch.h"
#include "core/macros.h"
#include "core/parallel.h"
#include "math/activation.h"

namespace pynn {

namespace {
constexpr int64_t kGrain = 32768;

template <ActKind K, class T>
PYNN_ALWAYS_INLINE void forward_rows(const T* __restrict x, T* __restrict y, int64_t n, T slope) {
  for (int64_t i = 0; i < n; ++i) y[i] = activation_forward<K>(x[i], slope);
}

template <ActKind K, class T>
PYNN_ALWAYS_INLINE void backward_rows(const T* __restrict g, const T* __restrict s,
                                      T* __restrict gi, int64_t n, T slope) {
  for (int64_t i = 0; i < n; ++i) gi[i] = activation_backward<K>(g[i], s[i], slope);
}

// One vectorised entry point per dtype and direction; the kind switch sits outside the loops.
#define PYNN_ACTIVATION_BLOCKS(T)                                                               \
  PYNN_CPU_MULTIVERSION void forward_block(int kind, const T* x, T* y, int64_t n, T slope) {    \
    switch (static_cast<ActKind>(kind)) {                                                      \
      case ActKind::Sigmoid: forward_rows<ActKind::Sigmoid>(x, y, n, slope); break;             \
      case ActKind::Tanh: forward_rows<ActKind::Tanh>(x, y, n, slope); break;                   \
      case ActKind::ReLU: forward_rows<ActKind::ReLU>(x, y, n, slope); break;                   \
      case ActKind::LeakyReLU: forward_rows<ActKind::LeakyReLU>(x, y, n, slope); break;         \
    }                                                                                          \
  }                                                                                            \
  PYNN_CPU_MULTIVERSION void backward_block(int kind, const T* g, const T* s, T* gi, int64_t n, \
                                            T slope) {                                         \
    switch (static_cast<ActKind>(kind)) {                                                      \
      case ActKind::Sigmoid: backward_rows<ActKind::Sigmoid>(g, s, gi, n, slope); break;        \
      case ActKind::Tanh: backward_rows<ActKind::Tanh>(g, s, gi, n, slope); break;              \
      case ActKind::ReLU: backward_rows<ActKind::ReLU>(g, s, gi, n, slope); break;              \
      case ActKind::LeakyReLU: backward_rows<ActKind::LeakyReLU>(g, s, gi, n, slope); break;    \
    }                                                                                          \
  }
PYNN_ACTIVATION_BLOCKS(float)
PYNN_ACTIVATION_BLOCKS(double)
#undef PYNN_ACTIVATION_BLOCKS

void check_kind(int kind, const char* op) {
  PYNN_CHECK(kind >= 0 && kind <= static_cast<int>(ActKind::LeakyReLU), op,
             ": unknown activation kind ", kind);
}
}  // namespace

void activation_forward_cpu(const TensorView& input, const TensorView& output, int kind,
                            double slope) {
  const char* op = "activation_forward";
  check_kind(kind, op);
  check_same_dtype(input, output, op, "input", "output");
  check_same_dense_layout(input, output, op, "input", "output");
  // Dense with equal strides: walk both from their lowest address.
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    const T* x = input.ptr<T>();
    T* y = output.ptr<T>();
    parallel_for(0, input.numel(), kGrain, [&](int64_t b, int64_t e) {
      forward_block(kind, x + b, y + b, e - b, static_cast<T>(slope));
    });
  });
}

void activation_backward_cpu(const TensorView& grad_output, const TensorView& saved,
                             const TensorView& grad_input, int kind, double slope) {
  const char* op = "activation_backward";
  check_kind(kind, op);
  check_same_dtype(grad_output, saved, op, "grad_output", "saved");
  check_same_dtype(grad_output, grad_input, op, "grad_output", "grad_input");
  check_same_dense_layout(grad_output, saved, op, "grad_output", "saved");
  check_same_dense_layout(grad_output, grad_input, op, "grad_output", "grad_input");
  dispatch_floating(grad_output.dtype, op, "grad_output", [&](auto tag) {
    using T = decltype(tag);
    const T* g = grad_output.ptr<T>();
    const T* s = saved.ptr<T>();
    T* gi = grad_input.ptr<T>();
    parallel_for(0, grad_output.numel(), kGrain, [&](int64_t b, int64_t e) {
      backward_block(kind, g + b, s + b, gi + b, e - b, static_cast<T>(slope));
    });
  });
}

}  // namespace pynn
