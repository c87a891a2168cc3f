#pragma once
// Row reductions for the softmax-shaped kernels (softmax.cu, loss.cu). A row of a
// (outer, n, inner) tensor is handled by a group of L lanes: L = 32 (a warp) when the row is
// contiguous (inner == 1), so the warp reads it coalesced; L = 1 otherwise, so neighbouring
// threads take neighbouring columns j and their reads along the row are coalesced instead.
#include <cuda_runtime.h>

#include <cstdint>

#include "math/softmax.h"

namespace pynn {
namespace cuda {

template <int L, class T>
__device__ __forceinline__ T group_sum(T v) {
#pragma unroll
  for (int off = L / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off, L);
  return v;
}

template <int L, class T>
__device__ __forceinline__ T group_max(T v) {
#pragma unroll
  for (int off = L / 2; off > 0; off >>= 1) v = max_step(v, __shfl_xor_sync(0xffffffffu, v, off, L));
  return v;
}

// Row index, lane and row stride of the calling thread. Every lane of a group gets the same
// row, so a group leaves the grid-stride loop together and the shuffles see full warps.
template <int L>
struct RowCursor {
  int64_t row, step;
  int lane;
  __device__ RowCursor() {
    const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    row = tid / L;
    lane = static_cast<int>(tid % L);
    step = int64_t(gridDim.x) * blockDim.x / L;
  }
};

}  // namespace cuda
}  // namespace pynn
