// LRN on the GPU: one thread per pixel (n, p) slides the channel window, O(C) per pixel, with the
// window bookkeeping of math/lrn.h (so NaN/inf stay in their own windows as on the CPU). With P
// of stride 1 (NCHW) neighbouring threads read neighbouring addresses. The backward recomputes a
// leaving gradient term instead of keeping a per-thread ring of `size` entries.
#include <type_traits>

#include "core/cuda_utils.cuh"
#include "core/dispatch.h"
#include "math/lrn.h"
#include "ops/lrn.h"

namespace pynn {
namespace {

struct LrnGeometry {
  int64_t N, C, P, before, after;
};

struct Strides3 {
  int64_t n, c, p;
};

inline Strides3 strides_of(const TensorView& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

template <class T, LrnPow K>
__global__ void lrn_forward_kernel(const T* __restrict__ x, T* __restrict__ y, T* __restrict__ s,
                                   LrnGeometry geo, Strides3 xs, Strides3 ys, Strides3 ss,
                                   double coef, double k, T beta) {
  constexpr bool kComp = std::is_same<T, double>::value;
  const int64_t pixels = geo.N * geo.P;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pixels;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / geo.P, q = i - n * geo.P;
    const T* xb = x + n * xs.n + q * xs.p;
    T* yb = y + n * ys.n + q * ys.p;
    auto sq = [&](int64_t j) {
      const double v = static_cast<double>(xb[j * xs.c]);
      return v * v;
    };
    LrnWindow<kComp, false> win;
    const int64_t prime = geo.after < geo.C ? geo.after : geo.C;
    for (int64_t j = 0; j < prime; ++j) win.slide(sq(j), 0.0);
    for (int64_t c = 0; c < geo.C; ++c) {
      win.slide(c + geo.after < geo.C ? sq(c + geo.after) : 0.0,
                c - geo.before - 1 >= 0 ? sq(c - geo.before - 1) : 0.0);
      const T sv = lrn_scale<T>(win.value(), coef, k);
      if (s) s[n * ss.n + q * ss.p + c * ss.c] = sv;
      yb[c * ys.c] = xb[c * xs.c] * lrn_pow_neg<K>(sv, beta);
    }
  }
}

template <class T, LrnPow K>
__global__ void lrn_backward_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                    const T* __restrict__ s, T* __restrict__ gi, LrnGeometry geo,
                                    Strides3 gs, Strides3 xs, Strides3 ss, Strides3 is,
                                    double coef2, T beta) {
  constexpr bool kComp = std::is_same<T, double>::value;
  const int64_t pixels = geo.N * geo.P;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pixels;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / geo.P, q = i - n * geo.P;
    const T* gb = g + n * gs.n + q * gs.p;
    const T* xb = x + n * xs.n + q * xs.p;
    const T* sb = s + n * ss.n + q * ss.p;
    T* ib = gi + n * is.n + q * is.p;
    auto term = [&](int64_t c) {
      return lrn_grad_term<K, T>(gb[c * gs.c], xb[c * xs.c], sb[c * ss.c], beta);
    };
    LrnWindow<kComp, true> win;
    const int64_t prime = geo.before < geo.C ? geo.before : geo.C;
    for (int64_t c = 0; c < prime; ++c) win.slide(term(c), 0.0);
    for (int64_t j = 0; j < geo.C; ++j) {
      win.slide(j + geo.before < geo.C ? term(j + geo.before) : 0.0,
                j - geo.after - 1 >= 0 ? term(j - geo.after - 1) : 0.0);
      const T sj = sb[j * ss.c];
      ib[j * is.c] = lrn_grad_input<T>(gb[j * gs.c], xb[j * xs.c], lrn_pow_neg<K>(sj, beta),
                                       win.value(), coef2);
    }
  }
}

}  // namespace

void lrn_forward_cuda(const TensorView& input, const TensorView& output, const TensorView& scale,
                      int64_t size, double alpha, double beta, double k, uintptr_t stream) {
  const char* op = "local_response_norm";
  bool write_scale = false;
  lrn_check_forward(input, output, scale, size, write_scale);
  check_device(input, Device::CUDA, op, "input");
  const LrnGeometry geo{input.size(0), input.size(1), input.size(2), size / 2, (size - 1) / 2};
  const int64_t pixels = geo.N * geo.P;
  if (input.numel() == 0) return;
  cuda::DeviceGuard guard(input);
  const double coef = alpha / static_cast<double>(size);
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    dispatch_lrn_pow(beta, [&](auto pk) {
      constexpr LrnPow K = decltype(pk)::kind;
      lrn_forward_kernel<T, K><<<cuda::blocks_for(pixels), cuda::kThreads, 0,
                                 cuda::as_stream(stream)>>>(
          input.ptr<T>(), output.ptr<T>(), write_scale ? scale.ptr<T>() : nullptr, geo,
          strides_of(input), strides_of(output),
          write_scale ? strides_of(scale) : Strides3{0, 0, 0}, coef, k, static_cast<T>(beta));
      cuda::check_launch("lrn_forward_kernel");
    });
  });
}

void lrn_backward_cuda(const TensorView& grad_output, const TensorView& input,
                       const TensorView& scale, const TensorView& grad_input, int64_t size,
                       double alpha, double beta, uintptr_t stream) {
  const char* op = "local_response_norm_backward";
  lrn_check_backward(grad_output, input, scale, grad_input, size);
  check_device(input, Device::CUDA, op, "input");
  const LrnGeometry geo{input.size(0), input.size(1), input.size(2), size / 2, (size - 1) / 2};
  const int64_t pixels = geo.N * geo.P;
  if (input.numel() == 0) return;
  cuda::DeviceGuard guard(input);
  const double coef2 = 2.0 * alpha * beta / static_cast<double>(size);
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    dispatch_lrn_pow(beta, [&](auto pk) {
      constexpr LrnPow K = decltype(pk)::kind;
      lrn_backward_kernel<T, K><<<cuda::blocks_for(pixels), cuda::kThreads, 0,
                                  cuda::as_stream(stream)>>>(
          grad_output.ptr<T>(), input.ptr<T>(), scale.ptr<T>(), grad_input.ptr<T>(), geo,
          strides_of(grad_output), strides_of(input), strides_of(scale), strides_of(grad_input),
          coef2, static_cast<T>(beta));
      cuda::check_launch("lrn_backward_kernel");
    });
  });
}

}  // namespace pynn
