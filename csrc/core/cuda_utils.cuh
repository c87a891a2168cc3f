#pragma once
// Helpers for the CUDA launchers: device guard, error checks that raise, grid sizing.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/error.h"
#include "core/tensor.h"

namespace pynn {
namespace cuda {

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear a sticky launch error so later calls start clean
    throw RuntimeError(detail::concat("CUDA error in ", what, ": ", cudaGetErrorString(err)));
  }
}

// Call right after a launch: raises naming the kernel if the launch failed.
inline void check_launch(const char* kernel) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw RuntimeError(detail::concat("CUDA kernel ", kernel, " failed to launch: ",
                                      cudaGetErrorString(err)));
}

// Makes the tensor's device current for the scope, restoring the previous one after.
class DeviceGuard {
 public:
  explicit DeviceGuard(const TensorView& t) {
    check(cudaGetDevice(&prev_), "cudaGetDevice");
    if (prev_ != t.device_index) check(cudaSetDevice(t.device_index), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(prev_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};

inline cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

constexpr int kThreads = 256;

// Enough blocks to cover n with a grid-stride loop, capped so huge tensors reuse blocks.
inline unsigned int blocks_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(b, 65535 * 8)));
}

}  // namespace cuda
}  // namespace pynn
