#pragma once
// dispatch_floating(dtype, "op", "arg", [&](auto tag) { using T = decltype(tag); ... });
#include "core/tensor.h"

namespace pynn {

template <class F>
void dispatch_floating(DType dtype, const char* op, const char* arg, F&& f) {
  switch (dtype) {
    case DType::Float32: f(float{}); return;
    case DType::Float64: f(double{}); return;
    default:
      throw TypeError(detail::concat(op, ": ", arg, " has dtype ", dtype_name(dtype),
                                     "; only float32 and float64 are supported"));
  }
}

// Accumulator type for reductions: double for float on the CPU keeps sums of many terms exact
// enough for the parity tolerances; float64 stays float64.
template <class T>
struct acc_type { using type = double; };

}  // namespace pynn
