#pragma once
// Philox-4x32-10, the counter-based generator of Salmon, Moraes, Dror and Shaw, "Parallel Random
// Numbers: As Easy as 1, 2, 3" (SC'11), written from the paper's definition. A counter-based
// generator is a pure function of (counter, key): any element's random word is computed where it
// is needed, with no state to carry between threads, kernels or devices. That is what lets the
// CPU loop and the CUDA kernel produce bit-identical dropout masks, and the dropout backward
// recompute its mask from the seed instead of keeping it in memory.
#include <cstdint>

#include "core/macros.h"

namespace pynn {

struct Philox4x32 {
  uint32_t v[4];
};

namespace philox {
// The round multipliers and the Weyl key increments (golden ratio and sqrt(3) - 1, scaled to
// 32 bits) chosen in the paper for the 4x32 variant.
constexpr uint32_t kM0 = 0xD2511F53u;
constexpr uint32_t kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u;
constexpr uint32_t kW1 = 0xBB67AE85u;
constexpr int kRounds = 10;
}  // namespace philox

// One 32x32 -> 64-bit product split into halves; on the GPU this compiles to mul.lo/mul.hi, so
// the same source serves both devices.
PYNN_HOST_DEVICE void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// Four 32-bit random words for `ctr` under `key`: ten S-P rounds, the key bumped by the Weyl
// constants between rounds (the key schedule of the paper, not a bump after the last round).
PYNN_HOST_DEVICE Philox4x32 philox4x32_10(Philox4x32 ctr, uint32_t key0, uint32_t key1) {
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int r = 0; r < philox::kRounds; ++r) {
    if (r > 0) {
      key0 += philox::kW0;
      key1 += philox::kW1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(philox::kM0, ctr.v[0], hi0, lo0);
    philox_mulhilo(philox::kM1, ctr.v[2], hi1, lo1);
    ctr = Philox4x32{{hi1 ^ ctr.v[1] ^ key0, lo1, hi0 ^ ctr.v[3] ^ key1, lo0}};
  }
  return ctr;
}

// The stream layout pynn uses everywhere: a 64-bit seed is the key, the low half of the counter
// is the block index (4 words per block) and the high half a 64-bit offset, so one seed can feed
// independent streams by offset.
PYNN_HOST_DEVICE Philox4x32 philox_block(uint64_t seed, uint64_t offset, uint64_t block) {
  const Philox4x32 ctr{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                        static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)}};
  return philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

}  // namespace pynn
