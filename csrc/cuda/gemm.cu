// Shared-memory tiled GEMM: each 256-thread block computes a 64x64 tile of C, each thread a 4x4
// sub-tile, stepping through K in slices of 16. Our own kernel rather than cuBLAS so that the
// package builds against a bare CUDA toolkit.
#include "core/cuda_utils.cuh"
#include "cuda/gemm.cuh"

namespace pynn {
namespace {

constexpr int BM = 64, BN = 64, BK = 16, TM = 4, TN = 4;

template <class T>
__global__ void __launch_bounds__(256) gemm_kernel(int64_t M, int64_t N, int64_t K, T alpha,
                                                   const T* __restrict__ A, int64_t a_bs,
                                                   int64_t a_rs, int64_t a_cs,
                                                   const T* __restrict__ B, int64_t b_bs,
                                                   int64_t b_rs, int64_t b_cs, T beta, T* C,
                                                   int64_t c_bs, int64_t c_rs) {
  __shared__ T As[BK][BM + 1];
  __shared__ T Bs[BK][BN + 1];
  A += blockIdx.z * a_bs;
  B += blockIdx.z * b_bs;
  C += blockIdx.z * c_bs;
  const int tid = threadIdx.x;
  const int tr = tid / (BN / TN), tc = tid % (BN / TN);  // 16 x 16 threads
  const int64_t row0 = int64_t(blockIdx.y) * BM, col0 = int64_t(blockIdx.x) * BN;
  // Neighbouring threads load neighbouring addresses: along k when A is row-major (a_cs == 1,
  // e.g. a linear layer's input) and along m otherwise; along k when B is column-major (b_rs
  // == 1, e.g. W^T of a linear layer or im2col columns read transposed) and along n otherwise.
  // Either way the 1024 indices of a tile map one-to-one onto its 64 x 16 elements.
  const bool a_k_fast = a_cs == 1, b_k_fast = b_rs == 1 && b_cs != 1;
  T acc[TM][TN] = {};
  for (int64_t k0 = 0; k0 < K; k0 += BK) {
    // Each thread loads 4 elements of the A tile (64 x 16) and 4 of the B tile (16 x 64).
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const int idx = tid + l * 256;
      const int am = a_k_fast ? idx / BK : idx % BM, ak = a_k_fast ? idx % BK : idx / BM;
      const int64_t gm = row0 + am, gk = k0 + ak;
      As[ak][am] = (gm < M && gk < K) ? A[gm * a_rs + gk * a_cs] : T(0);
      const int bn = b_k_fast ? idx / BK : idx % BN, bk = b_k_fast ? idx % BK : idx / BN;
      const int64_t gn = col0 + bn, gk2 = k0 + bk;
      Bs[bk][bn] = (gn < N && gk2 < K) ? B[gk2 * b_rs + gn * b_cs] : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      T a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = As[k][tr * TM + i];
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = Bs[k][tc * TN + j];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int64_t gm = row0 + tr * TM + i;
    if (gm >= M) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int64_t gn = col0 + tc * TN + j;
      if (gn >= N) continue;
      T* c = C + gm * c_rs + gn;
      *c = beta == T(0) ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *c;
    }
  }
}

}  // namespace

template <class T>
void gemm_cuda(int64_t batch, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t a_bs,
               int64_t a_rs, int64_t a_cs, const T* B, int64_t b_bs, int64_t b_rs, int64_t b_cs,
               T beta, T* C, int64_t c_bs, int64_t c_rs, cudaStream_t stream) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  // gridDim.y and gridDim.z stop at 65535, so a batch of more matrices or a C of more than
  // 65535 row tiles (4M rows: a linear layer over a long flattened sequence, an RNN's
  // all-steps projection) runs as several launches over slices of the batch and of the rows.
  constexpr int64_t kMaxGridYZ = 65535, kRowsPerLaunch = kMaxGridYZ * BM;
  const unsigned col_tiles = static_cast<unsigned>((N + BN - 1) / BN);
  for (int64_t b0 = 0; b0 < batch; b0 += kMaxGridYZ) {
    const int64_t nb = std::min(kMaxGridYZ, batch - b0);
    for (int64_t m0 = 0; m0 < M; m0 += kRowsPerLaunch) {
      const int64_t mc = std::min(kRowsPerLaunch, M - m0);
      const dim3 grid(col_tiles, static_cast<unsigned>((mc + BM - 1) / BM),
                      static_cast<unsigned>(nb));
      gemm_kernel<T><<<grid, 256, 0, stream>>>(
          mc, N, K, alpha, A + b0 * a_bs + m0 * a_rs, a_bs, a_rs, a_cs, B + b0 * b_bs, b_bs, b_rs,
          b_cs, beta, C + b0 * c_bs + m0 * c_rs, c_bs, c_rs);
      cuda::check_launch("gemm_kernel");
    }
  }
}

template void gemm_cuda<float>(int64_t, int64_t, int64_t, int64_t, float, const float*, int64_t,
                               int64_t, int64_t, const float*, int64_t, int64_t, int64_t, float,
                               float*, int64_t, int64_t, cudaStream_t);
template void gemm_cuda<double>(int64_t, int64_t, int64_t, int64_t, double, const double*,
                                int64_t, int64_t, int64_t, const double*, int64_t, int64_t,
                                int64_t, double, double*, int64_t, int64_t, cudaStream_t);

}  // namespace pynn

// ---- op entry point -------------------------------------------------------------------------
#include "core/dispatch.h"
#include "ops/gemm.h"

namespace pynn {
namespace detail {
void check_matmul_args(const TensorView& a, const TensorView& b, const TensorView& c,
                       const char* op);
}

void matmul_cuda(const TensorView& a, const TensorView& b, const TensorView& c, double alpha,
                 double beta, uintptr_t stream) {
  detail::check_matmul_args(a, b, c, "matmul");
  cuda::DeviceGuard guard(a);
  dispatch_floating(a.dtype, "matmul", "a", [&](auto tag) {
    using T = decltype(tag);
    gemm_cuda<T>(1, a.sizes[0], b.sizes[1], a.sizes[1], T(alpha), a.ptr<T>(), 0, a.strides[0],
                 a.strides[1], b.ptr<T>(), 0, b.strides[0], b.strides[1], T(beta), c.ptr<T>(), 0,
                 c.strides[0], cuda::as_stream(stream));
  });
}

}  // namespace pynn
