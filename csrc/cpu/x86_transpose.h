#pragma once
// 8 x 8 float and 4 x 4 double transposes in AVX registers, shared by the GEMM's packers and
// transposed stores (gemm.cpp) and the blocked convolution's copies (conv_blocked.cpp).
// x86-64 with GCC or Clang only; callers guard the include.
#include <immintrin.h>

#include <cstdint>

#include "core/macros.h"

namespace pynn {

// In-register transposes: out[c] = column c of the W x W tile whose rows are in[0..W).
__attribute__((target("avx2,fma"))) PYNN_ALWAYS_INLINE void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

__attribute__((target("avx2,fma"))) PYNN_ALWAYS_INLINE void transpose4(__m256d r[4]) {
  const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
  const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
  r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
  r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
  r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
  r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}

// A strided 8 x 8 float block transposed: row k < dst_rows of dst (dst_rs apart) takes column k
// of the block whose row r is the 8 floats at src + r * src_rs for r < src_rows, zero below.
__attribute__((target("avx2,fma"))) PYNN_ALWAYS_INLINE void transpose8_block(
    const float* src, int64_t src_rs, int src_rows, float* dst, int64_t dst_rs, int dst_rows) {
  __m256 r[8];
  for (int i = 0; i < 8; ++i)
    r[i] = i < src_rows ? _mm256_loadu_ps(src + i * src_rs) : _mm256_setzero_ps();
  transpose8(r);
  for (int k = 0; k < dst_rows; ++k) _mm256_storeu_ps(dst + k * dst_rs, r[k]);
}

}  // namespace pynn
