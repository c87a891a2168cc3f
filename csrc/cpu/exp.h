#pragma once
// exp for the CPU softmax-shaped loops, in a form the compiler vectorises: the branch-free
// polynomial of math/simd_math.h (no libm call, only selects; GCC if-converts those selects only
// without -ftrapping-math, which CMakeLists.txt sets for the whole build). libm's expf is a
// scalar call per element and made the softmax rows several times slower than torch's.
#include "math/simd_math.h"

namespace pynn {
namespace cpu {

// x must not exceed ExpConst<T>::max_arg (88 in float): these loops take exp of x - max over a
// row or of a log-probability, both <= 0 (or NaN, or -inf).
struct VecExp {
  template <class T>
  T operator()(T x) const { return simd_math::exp_below_max(x); }
};

}  // namespace cpu
}  // namespace pynn
