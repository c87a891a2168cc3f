#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace pynn {

// Batched C[b] = alpha * A[b] @ B[b] + beta * C[b] (M x K times K x N), any strides for A and
// B, row stride c_rs and unit column stride for C; batch b offsets by the *_bs strides.
// beta == 0 never reads C. Used by every CUDA op that multiplies matrices.
template <class T>
void gemm_cuda(int64_t batch, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t a_bs,
               int64_t a_rs, int64_t a_cs, const T* B, int64_t b_bs, int64_t b_rs, int64_t b_cs,
               T beta, T* C, int64_t c_bs, int64_t c_rs, cudaStream_t stream);

}  // namespace pynn
