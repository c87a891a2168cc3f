#include "core/cuda_utils.cuh"
#include "core/dispatch.h"
#include "math/dropout.h"
#include "ops/dropout.h"

namespace pynn {
namespace {

// One thread per Philox block of four elements (grid-stride). It calls the same
// dropout_apply_block as the CPU loop, which is what makes the two devices' masks identical.
// x and y may alias (in-place dropout), hence no __restrict__.
template <class T>
__global__ void dropout_kernel(const T* x, T* y, int64_t n, uint64_t seed, uint64_t offset,
                               uint64_t threshold, T scale) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < blocks;
       b += int64_t(gridDim.x) * blockDim.x)
    dropout_apply_block<T>(static_cast<uint64_t>(b), x, y, n, seed, offset, threshold, scale);
}

void dropout_apply_cuda(const TensorView& src, const TensorView& dst, double p, uint64_t seed,
                        uint64_t offset, uintptr_t stream, const char* op, const char* src_name,
                        const char* dst_name) {
  check_device(src, Device::CUDA, op, src_name);
  check_same_dtype(src, dst, op, src_name, dst_name);
  check_same_device(src, dst, op, src_name, dst_name);
  check_same_dense_layout(src, dst, op, src_name, dst_name);
  const uint64_t threshold = dropout_threshold(p, op);
  const double scale = dropout_scale(p);
  const int64_t n = src.numel();
  if (n == 0) return;
  cuda::DeviceGuard guard(src);
  dispatch_floating(src.dtype, op, src_name, [&](auto tag) {
    using T = decltype(tag);
    dropout_kernel<T><<<cuda::blocks_for((n + 3) / 4), cuda::kThreads, 0,
                        cuda::as_stream(stream)>>>(src.ptr<T>(), dst.ptr<T>(), n, seed, offset,
                                                   threshold, static_cast<T>(scale));
    cuda::check_launch("dropout_kernel");
  });
}

}  // namespace

void dropout_forward_cuda(const TensorView& input, const TensorView& output, double p,
                          uint64_t seed, uint64_t offset, uintptr_t stream) {
  dropout_apply_cuda(input, output, p, seed, offset, stream, "dropout", "input", "output");
}

void dropout_backward_cuda(const TensorView& grad_output, const TensorView& grad_input, double p,
                           uint64_t seed, uint64_t offset, uintptr_t stream) {
  dropout_apply_cuda(grad_output, grad_input, p, seed, offset, stream, "dropout_backward",
                     "grad_output", "grad_input");
}

}  // namespace pynn
