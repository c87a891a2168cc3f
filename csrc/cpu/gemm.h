#pragma once
#include <cstdint>

namespace pynn {

// C[M,N] = alpha * A[M,K] @ B[K,N] + beta * C, row-major C with row stride c_rs and unit column
// stride. A and B may have any strides, so transposed operands are just swapped strides.
// beta == 0 never reads C (it may hold NaN). Runs on the pool; serial inside a parallel region.
template <class T>
void gemm_cpu(int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t a_rs, int64_t a_cs,
              const T* B, int64_t b_rs, int64_t b_cs, T beta, T* C, int64_t c_rs);

}  // namespace pynn
