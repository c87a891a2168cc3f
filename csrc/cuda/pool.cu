// CUDA pooling. One thread per output for the forwards; the backwards gather (one thread per
// input, summing over the outputs whose window covers it, in output order) so they need no
// atomics and are deterministic. NCHW and NHWC share each kernel: only the decoding of the flat
// index and the element step differ, and in NHWC neighbouring threads take neighbouring channels
// so loads coalesce. Windows, divisors and covering ranges come from math/pool.h, the code the
// CPU kernels (and so the CPU tests) run.
#include <limits>
#include <type_traits>

#include "core/cuda_utils.cuh"
#include "core/dispatch.h"
#include "math/pool.h"
#include "ops/pool.h"

namespace pynn {
namespace {

// (n, c, h, w) of flat index i of an (N, C, H, W) tensor stored NCHW or NHWC.
struct Coord {
  int64_t n, c, h, w;
};

template <bool kNHWC>
__device__ __forceinline__ Coord decode(int64_t i, int64_t C, int64_t H, int64_t W) {
  if (kNHWC) {
    const int64_t c = i % C;
    int64_t r = i / C;
    const int64_t w = r % W;
    r /= W;
    return {r / H, c, r % H, w};
  }
  const int64_t w = i % W;
  int64_t r = i / W;
  const int64_t h = r % H;
  r /= H;
  return {r / C, r % C, h, w};
}

// Offset of element (n, c, 0, 0) of an (N, C, H, W) tensor holding hw = H*W pixels per plane,
// and the distance between flat pixel indices f and f + 1.
template <bool kNHWC>
__device__ __forceinline__ int64_t plane_offset(int64_t n, int64_t c, int64_t C, int64_t hw) {
  return kNHWC ? n * hw * C + c : (n * C + c) * hw;
}

template <bool kNHWC>
__device__ __forceinline__ int64_t pixel_step(int64_t C) {
  return kNHWC ? C : 1;
}

template <class T, class I, bool kIdx, bool kNHWC>
__global__ void max_pool2d_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                          I* __restrict__ ind, int64_t total, int64_t C,
                                          MaxPoolParams p) {
  const int64_t W = p.w.in;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total;
       o += int64_t(gridDim.x) * blockDim.x) {
    const Coord oc = decode<kNHWC>(o, C, p.h.out, p.w.out);
    const int64_t in_base = plane_offset<kNHWC>(oc.n, oc.c, C, p.h.in * W);
    const int64_t step = pixel_step<kNHWC>(C);
    const MaxTaps th = max_pool_taps(oc.h, p.h), tw = max_pool_taps(oc.w, p.w);
    T best = -std::numeric_limits<T>::infinity();
    // As on the CPU: start at the first tap inside the input (torch's index for a window with
    // none), stored as a flat index or, for uint8, as the tap number inside the window.
    int64_t arg =
        kPoolTapIndex<I> ? th.skipped * p.w.kernel + tw.skipped : th.first * W + tw.first;
    for (int64_t jh = 0; jh < th.count; ++jh) {
      const int64_t h = th.first + jh * p.h.dilation;
      for (int64_t jw = 0; jw < tw.count; ++jw) {
        const int64_t flat = h * W + tw.first + jw * p.w.dilation;
        const T v = x[in_base + flat * step];
        if (max_pool_takes(v, best)) {
          best = v;
          arg = kPoolTapIndex<I> ? (th.skipped + jh) * p.w.kernel + tw.skipped + jw : flat;
        }
      }
    }
    y[o] = best;
    if (kIdx) ind[o] = static_cast<I>(arg);
  }
}

template <class T, class I, bool kNHWC>
__global__ void max_pool2d_backward_kernel(const T* __restrict__ go, const I* __restrict__ ind,
                                           T* __restrict__ gi, int64_t total, int64_t C,
                                           MaxPoolParams p) {
  const int64_t OH = p.h.out, OW = p.w.out;
  const int64_t span_h = (p.h.kernel - 1) * p.h.dilation + 1;
  const int64_t span_w = (p.w.kernel - 1) * p.w.dilation + 1;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const Coord ic = decode<kNHWC>(i, C, p.h.in, p.w.in);
    const int64_t out_base = plane_offset<kNHWC>(ic.n, ic.c, C, OH * OW);
    const int64_t step = pixel_step<kNHWC>(C);
    int64_t oh0, oh1, ow0, ow1;
    pool_covering(ic.h, span_h, p.h.stride, p.h.pad, OH, oh0, oh1);
    pool_covering(ic.w, span_w, p.w.stride, p.w.pad, OW, ow0, ow1);
    T sum = T(0);
    for (int64_t oh = oh0; oh < oh1; ++oh) {
      // A tap test first: an output whose window missed the input entirely stores an index
      // that may alias a real position, and must not receive its gradient.
      if (!max_pool_is_tap(ic.h, oh, p.h)) continue;
      for (int64_t ow = ow0; ow < ow1; ++ow) {
        if (!max_pool_is_tap(ic.w, ow, p.w)) continue;
        const int64_t o = out_base + (oh * OW + ow) * step;
        if (ind[o] == static_cast<I>(max_pool_index<I>(ic.h, ic.w, oh, ow, p))) sum += go[o];
      }
    }
    gi[i] = sum;
  }
}

template <class T, bool kNHWC>
__global__ void avg_pool2d_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                          int64_t total, int64_t C, AvgPoolParams p) {
  using Acc = typename acc_type<T>::type;
  const int64_t W = p.w.in;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total;
       o += int64_t(gridDim.x) * blockDim.x) {
    const Coord oc = decode<kNHWC>(o, C, p.h.out, p.w.out);
    const int64_t in_base = plane_offset<kNHWC>(oc.n, oc.c, C, p.h.in * W);
    const int64_t step = pixel_step<kNHWC>(C);
    const AvgWindow wh = avg_pool_window(oc.h, p.h), ww = avg_pool_window(oc.w, p.w);
    Acc sum = Acc(0);
    for (int64_t h = wh.start; h < wh.end; ++h)
      for (int64_t w = ww.start; w < ww.end; ++w) sum += static_cast<Acc>(x[in_base + (h * W + w) * step]);
    y[o] = static_cast<T>(sum / static_cast<Acc>(avg_pool_divisor(p, wh, ww)));
  }
}

// Global average pooling of NCHW planes: a warp per plane, so each plane is read coalesced.
template <class T>
__global__ void global_avg_pool_nchw_kernel(const T* __restrict__ x, T* __restrict__ y,
                                            int64_t planes, int64_t hw) {
  using Acc = typename acc_type<T>::type;
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t pl = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; pl < planes;
       pl += warps) {
    const T* xp = x + pl * hw;
    Acc sum = Acc(0);
    for (int64_t i = lane; i < hw; i += 32) sum += static_cast<Acc>(xp[i]);
    for (int off = 16; off > 0; off /= 2) sum += __shfl_down_sync(0xffffffffu, sum, off);
    if (lane == 0) y[pl] = static_cast<T>(sum / static_cast<Acc>(hw));
  }
}

template <class T, bool kNHWC>
__global__ void avg_pool2d_backward_kernel(const T* __restrict__ go, T* __restrict__ gi,
                                           int64_t total, int64_t C, AvgPoolParams p) {
  const int64_t OH = p.h.out, OW = p.w.out;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const Coord ic = decode<kNHWC>(i, C, p.h.in, p.w.in);
    const int64_t out_base = plane_offset<kNHWC>(ic.n, ic.c, C, OH * OW);
    const int64_t step = pixel_step<kNHWC>(C);
    int64_t oh0, oh1, ow0, ow1;
    avg_pool_covering(ic.h, p.h, oh0, oh1);
    avg_pool_covering(ic.w, p.w, ow0, ow1);
    T sum = T(0);
    for (int64_t oh = oh0; oh < oh1; ++oh) {
      const AvgWindow wh = avg_pool_window(oh, p.h);
      for (int64_t ow = ow0; ow < ow1; ++ow) {
        const AvgWindow ww = avg_pool_window(ow, p.w);
        // grad / divisor per output, then summed: the CPU kernel's (and torch's) rounding.
        sum += go[out_base + (oh * OW + ow) * step] / static_cast<T>(avg_pool_divisor(p, wh, ww));
      }
    }
    gi[i] = sum;
  }
}

template <class F>
void dispatch_index(const TensorView& ind, bool store, F&& f) {
  if (!store) f(static_cast<int32_t*>(nullptr), std::false_type{});
  else if (ind.dtype == DType::Int64) f(ind.ptr<int64_t>(), std::true_type{});
  else if (ind.dtype == DType::UInt8) f(ind.ptr<uint8_t>(), std::true_type{});
  else f(ind.ptr<int32_t>(), std::true_type{});
}

template <class F>
void dispatch_layout(PoolLayout layout, F&& f) {
  if (layout == PoolLayout::NHWC) f(std::true_type{});
  else f(std::false_type{});
}

void avg_forward_cuda(const TensorView& input, const TensorView& output, const PoolGeometry& g,
                      const AvgPoolParams& p, const char* op, uintptr_t stream) {
  const int64_t total = output.numel();
  if (total == 0) return;
  cuda::DeviceGuard guard(input);
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    if (g.layout == PoolLayout::NCHW && g.OH == 1 && g.OW == 1 && p.h.adaptive) {
      const int64_t warps_per_block = cuda::kThreads / 32;
      const unsigned blocks = static_cast<unsigned>(
          std::min<int64_t>((total + warps_per_block - 1) / warps_per_block, 65535 * 8));
      global_avg_pool_nchw_kernel<T><<<blocks, cuda::kThreads, 0, cuda::as_stream(stream)>>>(
          input.ptr<T>(), output.ptr<T>(), total, g.H * g.W);
      cuda::check_launch("global_avg_pool_nchw_kernel");
      return;
    }
    dispatch_layout(g.layout, [&](auto nhwc) {
      avg_pool2d_forward_kernel<T, decltype(nhwc)::value>
          <<<cuda::blocks_for(total), cuda::kThreads, 0, cuda::as_stream(stream)>>>(
              input.ptr<T>(), output.ptr<T>(), total, g.C, p);
      cuda::check_launch("avg_pool2d_forward_kernel");
    });
  });
}

void avg_backward_cuda(const TensorView& grad_output, const TensorView& grad_input,
                       const PoolGeometry& g, const AvgPoolParams& p, const char* op,
                       uintptr_t stream) {
  const int64_t total = grad_input.numel();
  if (total == 0) return;
  cuda::DeviceGuard guard(grad_input);
  dispatch_floating(grad_output.dtype, op, "grad_output", [&](auto tag) {
    using T = decltype(tag);
    if (g.OH == 0 || g.OW == 0) {  // adaptive pooling to an empty output: nothing flows back
      cuda::check(cudaMemsetAsync(grad_input.data, 0, total * sizeof(T), cuda::as_stream(stream)),
                  "cudaMemsetAsync");
      return;
    }
    dispatch_layout(g.layout, [&](auto nhwc) {
      avg_pool2d_backward_kernel<T, decltype(nhwc)::value>
          <<<cuda::blocks_for(total), cuda::kThreads, 0, cuda::as_stream(stream)>>>(
              grad_output.ptr<T>(), grad_input.ptr<T>(), total, g.C, p);
      cuda::check_launch("avg_pool2d_backward_kernel");
    });
  });
}

}  // namespace

void max_pool2d_forward_cuda(const TensorView& input, const TensorView& output,
                             const TensorView& indices, int64_t kh, int64_t kw, int64_t sh,
                             int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                             uintptr_t stream) {
  const char* op = "max_pool2d_forward";
  const PoolGeometry g = pool_check_pair(input, output, op, "input", "output");
  const MaxPoolParams p = make_max_pool_params(g, kh, kw, sh, sw, ph, pw, dh, dw, op);
  const bool store = pool_check_indices(indices, output, g, p, op);
  check_device(input, Device::CUDA, op, "input");
  const int64_t total = output.numel();
  if (total == 0) return;
  cuda::DeviceGuard guard(input);
  dispatch_floating(input.dtype, op, "input", [&](auto tag) {
    using T = decltype(tag);
    dispatch_index(indices, store, [&](auto* ind, auto has) {
      using I = std::remove_pointer_t<decltype(ind)>;
      dispatch_layout(g.layout, [&](auto nhwc) {
        max_pool2d_forward_kernel<T, I, decltype(has)::value, decltype(nhwc)::value>
            <<<cuda::blocks_for(total), cuda::kThreads, 0, cuda::as_stream(stream)>>>(
                input.ptr<T>(), output.ptr<T>(), ind, total, g.C, p);
        cuda::check_launch("max_pool2d_forward_kernel");
      });
    });
  });
}

void max_pool2d_backward_cuda(const TensorView& grad_output, const TensorView& indices,
                              const TensorView& grad_input, int64_t kh, int64_t kw, int64_t sh,
                              int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                              uintptr_t stream) {
  const char* op = "max_pool2d_backward";
  const PoolGeometry g = pool_check_pair(grad_input, grad_output, op, "grad_input", "grad_output");
  const MaxPoolParams p = make_max_pool_params(g, kh, kw, sh, sw, ph, pw, dh, dw, op);
  PYNN_CHECK(pool_check_indices(indices, grad_output, g, p, op), op, ": indices are required");
  check_device(grad_input, Device::CUDA, op, "grad_input");
  const int64_t total = grad_input.numel();
  if (total == 0) return;
  cuda::DeviceGuard guard(grad_input);
  dispatch_floating(grad_output.dtype, op, "grad_output", [&](auto tag) {
    using T = decltype(tag);
    dispatch_index(indices, true, [&](auto* ind, auto) {
      using I = std::remove_pointer_t<decltype(ind)>;
      dispatch_layout(g.layout, [&](auto nhwc) {
        max_pool2d_backward_kernel<T, I, decltype(nhwc)::value>
            <<<cuda::blocks_for(total), cuda::kThreads, 0, cuda::as_stream(stream)>>>(
                grad_output.ptr<T>(), ind, grad_input.ptr<T>(), total, g.C, p);
        cuda::check_launch("max_pool2d_backward_kernel");
      });
    });
  });
}

void avg_pool2d_forward_cuda(const TensorView& input, const TensorView& output, int64_t kh,
                             int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                             bool count_include_pad, int64_t divisor_override, uintptr_t stream) {
  const char* op = "avg_pool2d_forward";
  const PoolGeometry g = pool_check_pair(input, output, op, "input", "output");
  const AvgPoolParams p =
      make_avg_pool_params(g, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, op);
  check_device(input, Device::CUDA, op, "input");
  avg_forward_cuda(input, output, g, p, op, stream);
}

void avg_pool2d_backward_cuda(const TensorView& grad_output, const TensorView& grad_input,
                              int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                              int64_t pw, bool count_include_pad, int64_t divisor_override,
                              uintptr_t stream) {
  const char* op = "avg_pool2d_backward";
  const PoolGeometry g = pool_check_pair(grad_input, grad_output, op, "grad_input", "grad_output");
  const AvgPoolParams p =
      make_avg_pool_params(g, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, op);
  check_device(grad_input, Device::CUDA, op, "grad_input");
  avg_backward_cuda(grad_output, grad_input, g, p, op, stream);
}

void adaptive_avg_pool2d_forward_cuda(const TensorView& input, const TensorView& output,
                                      uintptr_t stream) {
  const char* op = "adaptive_avg_pool2d_forward";
  const PoolGeometry g = pool_check_pair(input, output, op, "input", "output");
  const AvgPoolParams p = make_adaptive_params(g, op);
  check_device(input, Device::CUDA, op, "input");
  avg_forward_cuda(input, output, g, p, op, stream);
}

void adaptive_avg_pool2d_backward_cuda(const TensorView& grad_output,
                                       const TensorView& grad_input, uintptr_t stream) {
  const char* op = "adaptive_avg_pool2d_backward";
  const PoolGeometry g = pool_check_pair(grad_input, grad_output, op, "grad_input", "grad_output");
  const AvgPoolParams p = make_adaptive_params(g, op);
  check_device(grad_input, Device::CUDA, op, "grad_input");
  avg_backward_cuda(grad_output, grad_input, g, p, op, stream);
}

}  // namespace pynn
