#include "ops/activation.h"

#include "core/dispatch.h"
#include "core/parallel.h"
#include "math/activation.h"

namespace pynn {

namespace {
constexpr int64_t kGrain = 32768;
}

void activation_forward_cpu(const TensorView& input, const TensorView& output, int kind,
                            double slope) {
  const char* op = "activation_forward";
  check_same_dtype(input, output, op, "input", "output");
  check_same_dense_layout(input, output, op, "input", "output");
  // Dense with equal strides: walk both from their lowest address.
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    dispatch_activation(kind, op, [&](auto act) {
      constexpr ActKind K = decltype(act)::kind;
      const T* x = input.ptr<T>();
      T* y = output.ptr<T>();
      const T s = static_cast<T>(slope);
      parallel_for(0, input.numel(), kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) y[i] = activation_forward<K>(x[i], s);
      });
    });
  });
}

void activation_backward_cpu(const TensorView& grad_output, const TensorView& saved,
                             const TensorView& grad_input, int kind, double slope) {
  const char* op = "activation_backward";
  check_same_dtype(grad_output, saved, op, "grad_output", "saved");
  check_same_dtype(grad_output, grad_input, op, "grad_output", "grad_input");
  check_same_dense_layout(grad_output, saved, op, "grad_output", "saved");
  check_same_dense_layout(grad_output, grad_input, op, "grad_output", "grad_input");
  dispatch_floating(grad_output.dtype, op, "grad_output", [&](auto tag) {
    using T = decltype(tag);
    dispatch_activation(kind, op, [&](auto act) {
      constexpr ActKind K = decltype(act)::kind;
      const T* g = grad_output.ptr<T>();
      const T* s = saved.ptr<T>();
      T* gi = grad_input.ptr<T>();
      const T sl = static_cast<T>(slope);
      parallel_for(0, grad_output.numel(), kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) gi[i] = activation_backward<K>(g[i], s[i], sl);
      });
    });
  });
}

}  // namespace pynn
