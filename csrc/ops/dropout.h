#pragma once
// Dropout with a counter-based mask (math/dropout.h): forward and backward are the same mask
// multiply, regenerated from (seed, offset) rather than stored. Tensors are dense with equal
// strides and walked flat, so the mask is indexed by memory position.
#include <array>
#include <cstdint>

#include "core/tensor.h"

namespace pynn {
void dropout_forward_cpu(const TensorView& input, const TensorView& output, double p,
                         uint64_t seed, uint64_t offset);
void dropout_backward_cpu(const TensorView& grad_output, const TensorView& grad_input, double p,
                          uint64_t seed, uint64_t offset);
#ifdef PYNN_WITH_CUDA
void dropout_forward_cuda(const TensorView& input, const TensorView& output, double p,
                          uint64_t seed, uint64_t offset, uintptr_t stream);
void dropout_backward_cuda(const TensorView& grad_output, const TensorView& grad_input, double p,
                           uint64_t seed, uint64_t offset, uintptr_t stream);
#endif

// The generator itself, for the known-answer tests against Random123's published vectors.
std::array<uint32_t, 4> philox4x32_10_host(std::array<uint32_t, 4> counter,
                                           std::array<uint32_t, 2> key);
}  // namespace pynn
