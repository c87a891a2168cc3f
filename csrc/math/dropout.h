#pragma once
// Dropout's mask, shared by the CPU loop and the CUDA kernel. Element i of a dense buffer reads
// word i % 4 of Philox block i / 4, so its fate depends only on (seed, offset, i): both devices
// draw the same mask, and the backward regenerates it instead of storing it.
#include <cstdint>

#include "core/error.h"
#include "core/macros.h"
#include "math/philox.h"

namespace pynn {

// Element kept iff its 32-bit word r >= threshold, so P(drop) = threshold / 2^32. threshold is
// p * 2^32 rounded, in [0, 2^32]: p = 0 keeps everything and p = 1 (threshold 2^32, beyond any
// word) drops everything without a special case. p is resolved to 2^-32.
inline uint64_t dropout_threshold(double p, const char* op) {
  PYNN_CHECK(p >= 0.0 && p <= 1.0, op, ": dropout probability has to be between 0 and 1, but got ",
             p);
  return static_cast<uint64_t>(p * 4294967296.0 + 0.5);
}

// 1 / (1 - p) keeps the expected value of each element; p = 1 keeps nothing, so 0 stands in for
// the infinite scale that would never be used.
inline double dropout_scale(double p) { return p < 1.0 ? 1.0 / (1.0 - p) : 0.0; }

// What element i is multiplied by: scale if kept, 0 if dropped. Multiplying (rather than
// selecting 0) lets NaN and inf in dropped slots propagate, as torch's input * mask does.
template <class T>
PYNN_HOST_DEVICE T dropout_multiplier(uint32_t r, uint64_t threshold, T scale) {
  return static_cast<uint64_t>(r) >= threshold ? scale : T(0);
}

// y[i] = x[i] * multiplier(i) for the four elements of Philox block `block` that lie below n.
// x and y may be the same buffer (in-place dropout), so neither is declared restrict.
template <class T>
PYNN_HOST_DEVICE void dropout_apply_block(uint64_t block, const T* x, T* y, int64_t n,
                                          uint64_t seed, uint64_t offset, uint64_t threshold,
                                          T scale) {
  const Philox4x32 r = philox_block(seed, offset, block);
  const int64_t i0 = static_cast<int64_t>(block) * 4;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int k = 0; k < 4; ++k)
    if (i0 + k < n) y[i0 + k] = x[i0 + k] * dropout_multiplier(r.v[k], threshold, scale);
}

}  // namespace pynn
