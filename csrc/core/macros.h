#pragma once
// PYNN_HOST_DEVICE marks per-element math that the CPU loops and the CUDA kernels share. It is
// forced inline on both sides: a CPU loop compiled for AVX-512 (PYNN_CPU_MULTIVERSION) that
// called an out-of-line copy would run that copy's baseline x86-64 code one element at a time
// (GCC left the LSTM gate update, five transcendentals, out of line when it was plain inline).
#if defined(__CUDACC__)
#define PYNN_HOST_DEVICE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define PYNN_HOST_DEVICE inline __attribute__((always_inline))
#else
#define PYNN_HOST_DEVICE inline
#endif

// CPU hot loops: compile a non-template entry point for AVX-512, AVX2+FMA and baseline x86-64 and
// let the loader pick by CPU (target_clones); the templates it calls are forced inline into it so
// that they are vectorised for each of those ISAs.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
#define PYNN_CPU_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PYNN_CPU_MULTIVERSION
#endif
#if defined(__GNUC__)
#define PYNN_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define PYNN_ALWAYS_INLINE inline
#endif
