#pragma once
// The CPU's softmax building blocks, shared by softmax.cpp and the fused cross-entropy in
// loss.cpp. A "tile" is `w` neighbouring columns of an (n, inner) block: element (k, j) lives at
// base[k * inner + j]. inner == 1 (w == 1) is a contiguous row and takes loops that vectorise
// along the row; otherwise the loops vectorise across the w columns. Each entry point is
// compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time, like the GEMM.
#include <cstdint>

namespace pynn {
namespace cpu {

// Most columns per tile. A tile's passes go down its n rows; with 16 columns (one cache line of
// floats per row) each row was a stream of its own, lines 3 KB apart at 28 x 28 positions, and
// the loads waited on memory: the 32 x 64 x 28 x 28 log_softmax backward over dim 1 took 3.4 ms
// on one thread, 1.3 with 256 columns (torch 1.8).
constexpr int64_t kSoftmaxTile = 256;

// The width of the tiles that an inner extent splits into: all of it up to kSoftmaxTile, else
// tiles as even as whole cache lines of floats allow (784 -> 208, 208, 208, 160).
inline int64_t softmax_tile_width(int64_t inner) {
  if (inner <= kSoftmaxTile) return inner;
  const int64_t tiles = (inner + kSoftmaxTile - 1) / kSoftmaxTile;
  return ((inner + tiles - 1) / tiles + 15) / 16 * 16;
}

// y = softmax (log_space: log_softmax) of each column of the tile. y may not alias x.
void softmax_tile_forward(const float* x, float* y, int64_t n, int64_t inner, int64_t w,
                          bool log_space);
void softmax_tile_forward(const double* x, double* y, int64_t n, int64_t inner, int64_t w,
                          bool log_space);

// gi = the gradient through softmax (log_softmax) given its output y and the gradient g.
void softmax_tile_backward(const float* g, const float* y, float* gi, int64_t n, int64_t inner,
                           int64_t w, bool log_space);
void softmax_tile_backward(const double* g, const double* y, double* gi, int64_t n,
                           int64_t inner, int64_t w, bool log_space);

}  // namespace cpu
}  // namespace pynn

// flatten: everything the entry point calls is inlined into each clone and so compiled for its
// instruction set; a helper left out of line would run the baseline code in every clone.
#define PYNN_SOFTMAX_ENTRY PYNN_CPU_MULTIVERSION __attribute__((flatten))
