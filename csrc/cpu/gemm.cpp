// Cache-blocked GEMM: B is packed into NR-wide column panels shared by all threads, each task
// packs an MC x KC block of A into MR-high row panels and runs a register-blocked micro-kernel.
// The micro-kernel is compiled for AVX-512, AVX2+FMA and baseline x86-64 and picked at load
// time from the CPU's features (target_clones), so one wheel runs well everywhere.
#include "cpu/gemm.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/parallel.h"

namespace pynn {
namespace {

#if defined(__x86_64__) && defined(__GNUC__)
#define PYNN_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PYNN_MULTIVERSION
#endif

template <class T>
struct Blocking;
template <>
struct Blocking<float> {
  static constexpr int MR = 6, NR = 32;
  static constexpr int64_t KC = 256, MC = 120, NC = 3072;
};
template <>
struct Blocking<double> {
  static constexpr int MR = 6, NR = 16;
  static constexpr int64_t KC = 256, MC = 96, NC = 1536;
};

// acc = Ap(MR x kc) @ Bp(kc x NR); C[:mr, :nr] = alpha * acc + beta * C (beta == 0: no read).
template <class T, int MR, int NR>
inline void micro_kernel_impl(int64_t kc, const T* __restrict Ap, const T* __restrict Bp, T* C,
                              int64_t c_rs, int mr, int nr, T alpha, T beta) {
  T acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = T(0);
  for (int64_t k = 0; k < kc; ++k) {
    const T* a = Ap + k * MR;
    const T* b = Bp + k * NR;
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] += a[i] * b[j];
  }
  for (int i = 0; i < mr; ++i) {
    T* c = C + i * c_rs;
    if (beta == T(0))
      for (int j = 0; j < nr; ++j) c[j] = alpha * acc[i][j];
    else
      for (int j = 0; j < nr; ++j) c[j] = alpha * acc[i][j] + beta * c[j];
  }
}

PYNN_MULTIVERSION
void micro_kernel(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t c_rs, int mr,
                  int nr, float alpha, float beta) {
  micro_kernel_impl<float, Blocking<float>::MR, Blocking<float>::NR>(kc, Ap, Bp, C, c_rs, mr, nr,
                                                                     alpha, beta);
}

PYNN_MULTIVERSION
void micro_kernel(int64_t kc, const double* Ap, const double* Bp, double* C, int64_t c_rs, int mr,
                  int nr, double alpha, double beta) {
  micro_kernel_impl<double, Blocking<double>::MR, Blocking<double>::NR>(kc, Ap, Bp, C, c_rs, mr,
                                                                        nr, alpha, beta);
}

// Packs A[0:mc, 0:kc] into ceil(mc/MR) panels laid out [panel][k][MR], zero-padding the last.
template <class T, int MR>
void pack_a(int64_t mc, int64_t kc, const T* A, int64_t a_rs, int64_t a_cs, T* Ap) {
  for (int64_t i0 = 0; i0 < mc; i0 += MR) {
    const int mr = static_cast<int>(std::min<int64_t>(MR, mc - i0));
    for (int64_t k = 0; k < kc; ++k) {
      const T* src = A + i0 * a_rs + k * a_cs;
      int i = 0;
      for (; i < mr; ++i) Ap[k * MR + i] = src[i * a_rs];
      for (; i < MR; ++i) Ap[k * MR + i] = T(0);
    }
    Ap += kc * MR;
  }
}

// Packs B[0:kc, j0:j1] (one NR panel) as [k][NR], zero-padding the columns past the edge.
template <class T, int NR>
void pack_b_panel(int64_t kc, int nr, const T* B, int64_t b_rs, int64_t b_cs, T* Bp) {
  for (int64_t k = 0; k < kc; ++k) {
    const T* src = B + k * b_rs;
    int j = 0;
    if (b_cs == 1)
      for (; j < nr; ++j) Bp[k * NR + j] = src[j];
    else
      for (; j < nr; ++j) Bp[k * NR + j] = src[j * b_cs];
    for (; j < NR; ++j) Bp[k * NR + j] = T(0);
  }
}

template <class T>
std::vector<T>& thread_buffer(size_t n) {
  thread_local std::vector<T> buf;
  if (buf.size() < n) buf.resize(n);
  return buf;
}

template <class T>
void scale_c(int64_t M, int64_t N, T beta, T* C, int64_t c_rs) {
  parallel_for(0, M, std::max<int64_t>(1, 16384 / std::max<int64_t>(N, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      T* c = C + i * c_rs;
      if (beta == T(0))
        std::fill(c, c + N, T(0));
      else
        for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
  });
}

}  // namespace

template <class T>
void gemm_cpu(int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t a_rs, int64_t a_cs,
              const T* B, int64_t b_rs, int64_t b_cs, T beta, T* C, int64_t c_rs) {
  using Bl = Blocking<T>;
  constexpr int MR = Bl::MR, NR = Bl::NR;
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == T(0)) {
    scale_c(M, N, beta, C, c_rs);
    return;
  }
  std::vector<T> Bp_storage;
  for (int64_t jc = 0; jc < N; jc += Bl::NC) {
    const int64_t nc = std::min(Bl::NC, N - jc);
    const int64_t npanels = (nc + NR - 1) / NR;
    for (int64_t pc = 0; pc < K; pc += Bl::KC) {
      const int64_t kc = std::min(Bl::KC, K - pc);
      const T beta_eff = pc == 0 ? beta : T(1);
      Bp_storage.resize(static_cast<size_t>(npanels * kc * NR));
      T* Bp = Bp_storage.data();
      parallel_for(0, npanels, 4, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
          const int nr = static_cast<int>(std::min<int64_t>(NR, nc - p * NR));
          pack_b_panel<T, NR>(kc, nr, B + pc * b_rs + (jc + p * NR) * b_cs, b_rs, b_cs,
                              Bp + p * kc * NR);
        }
      });
      // Tasks: M blocks x groups of B panels, enough groups to keep every thread busy when M
      // is small (the skinny shapes of linear and LSTM layers).
      const int64_t mblocks = (M + Bl::MC - 1) / Bl::MC;
      const int64_t nthreads = get_num_threads();
      const int64_t ngroups =
          std::min<int64_t>(npanels, std::max<int64_t>(1, (2 * nthreads + mblocks - 1) / mblocks));
      const int64_t panels_per_group = (npanels + ngroups - 1) / ngroups;
      parallel_for(0, mblocks * ngroups, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t ib = t / ngroups, g = t % ngroups;
          const int64_t ic = ib * Bl::MC, mc = std::min(Bl::MC, M - ic);
          const int64_t mpanels = (mc + MR - 1) / MR;
          T* Ap = thread_buffer<T>(static_cast<size_t>(mpanels * kc * MR)).data();
          pack_a<T, MR>(mc, kc, A + ic * a_rs + pc * a_cs, a_rs, a_cs, Ap);
          const int64_t p_end = std::min(npanels, (g + 1) * panels_per_group);
          for (int64_t p = g * panels_per_group; p < p_end; ++p) {
            const int nr = static_cast<int>(std::min<int64_t>(NR, nc - p * NR));
            for (int64_t ip = 0; ip < mpanels; ++ip) {
              const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ip * MR));
              micro_kernel(kc, Ap + ip * kc * MR, Bp + p * kc * NR,
                           C + (ic + ip * MR) * c_rs + jc + p * NR, c_rs, mr, nr, alpha, beta_eff);
            }
          }
        }
      });
    }
  }
}

template void gemm_cpu<float>(int64_t, int64_t, int64_t, float, const float*, int64_t, int64_t,
                              const float*, int64_t, int64_t, float, float*, int64_t);
template void gemm_cpu<double>(int64_t, int64_t, int64_t, double, const double*, int64_t, int64_t,
                               const double*, int64_t, int64_t, double, double*, int64_t);

}  // namespace pynn

// ---- op entry point -------------------------------------------------------------------------
#include "core/dispatch.h"
#include "ops/gemm.h"

namespace pynn {

namespace detail {
void check_matmul_args(const TensorView& a, const TensorView& b, const TensorView& c,
                       const char* op) {
  check_dim(a, 2, op, "a");
  check_dim(b, 2, op, "b");
  check_dim(c, 2, op, "c");
  check_same_dtype(a, b, op, "a", "b");
  check_same_dtype(a, c, op, "a", "c");
  check_same_device(a, b, op, "a", "b");
  check_same_device(a, c, op, "a", "c");
  PYNN_CHECK(a.sizes[1] == b.sizes[0], op, ": a ", a.shape_str(), " and b ", b.shape_str(),
             " cannot be multiplied");
  PYNN_CHECK(c.sizes[0] == a.sizes[0] && c.sizes[1] == b.sizes[1], op, ": c has shape ",
             c.shape_str(), ", expected [", a.sizes[0], ", ", b.sizes[1], "]");
  PYNN_CHECK(c.sizes[1] <= 1 || c.strides[1] == 1, op, ": c must have unit column stride");
}
}  // namespace detail

void matmul_cpu(const TensorView& a, const TensorView& b, const TensorView& c, double alpha,
                double beta) {
  detail::check_matmul_args(a, b, c, "matmul");
  dispatch_floating(a.dtype, "matmul", "a", [&](auto tag) {
    using T = decltype(tag);
    gemm_cpu<T>(a.sizes[0], b.sizes[1], a.sizes[1], T(alpha), a.ptr<T>(), a.strides[0],
                a.strides[1], b.ptr<T>(), b.strides[0], b.strides[1], T(beta), c.ptr<T>(),
                c.strides[0]);
  });
}

}  // namespace pynn
