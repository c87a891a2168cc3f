#pragma once
// C = alpha * A @ B + beta * C on 2-D views (A and B any strides, C unit column stride), the
// entry point that tests and benchmarks use to reach the GEMM every other op is built on.
#include <cstdint>

#include "core/tensor.h"

namespace pynn {
void matmul_cpu(const TensorView& a, const TensorView& b, const TensorView& c, double alpha,
                double beta);
#ifdef PYNN_WITH_CUDA
void matmul_cuda(const TensorView& a, const TensorView& b, const TensorView& c, double alpha,
                 double beta, uintptr_t stream);
#endif
}  // namespace pynn
