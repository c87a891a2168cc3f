#pragma once
// PYNN_HOST_DEVICE marks per-element math that the CPU loops and the CUDA kernels share.
#if defined(__CUDACC__)
#define PYNN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define PYNN_HOST_DEVICE inline
#endif
