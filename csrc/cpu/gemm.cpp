// CPU GEMM: packed panels, cache blocking and explicit vector micro-kernels.
//
// C[M,N] = alpha * A[M,K] @ B[K,N] + beta * C. The vector dimension is N (C is row-major), so a
// micro-kernel holds an MR x NR tile of C in registers, broadcasts MR values of A per k and
// multiplies them by NR/W vectors of B. Both operands are repacked so that the kernel walks them
// with unit stride whatever the caller's strides:
//   A -> MR-row panels laid out [k][MR]     (pack_a: one MC x KC block at a time)
//   B -> NR-column panels laid out [k][NR]  (pack_b: one KC x NC block at a time)
//
// Loop nest of one thread over its rectangle of C (see gemm_cpu for how C is split):
//   pc  (KC)  K in slices; C accumulates over slices (beta applied on the first one only)
//   ic  (MC)  pack an MC x KC block of A
//   jc  (NC)  pack a KC x NC block of B         -> sized to stay in L2
//   ir  (MR)  one A micro-panel, MR x KC        -> stays in L1 while
//   jr  (NR)  the B micro-panels stream from L2 through the micro-kernel
// This is the BLIS arrangement with the roles of A and B mirrored, because our broadcast
// operand is A: the small broadcast panel is the one kept in L1, the vector operand streams.
//
// Kernels are compiled for AVX-512, AVX2+FMA and plain C++ in this one translation unit with
// per-function target attributes; the library itself is built for baseline x86-64 and picks the
// best kernel the CPU supports at run time. PYNN_GEMM_KERNEL=avx512|avx2|generic forces one
// (tests use it to cover every path on one machine); unknown values raise.
#include "cpu/gemm.h"

#include "core/macros.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "core/error.h"
#include "core/parallel.h"
#include "cpu/aligned_buffer.h"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define PYNN_GEMM_X86 1
#include <immintrin.h>
#define PYNN_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define PYNN_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma")))
#include "cpu/x86_transpose.h"
#else
#define PYNN_GEMM_X86 0
#endif


namespace pynn {
namespace {

// ---- kernel selection ------------------------------------------------------------------------

enum class Isa { generic = 0, avx2 = 1, avx512 = 2 };

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

Isa detect_isa() {
#if PYNN_GEMM_X86
  // libgcc/compiler-rt also check that the OS saves the wide registers (XCR0), not just CPUID.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::generic;
}

// Read on every call (a getenv is tens of nanoseconds) so a test can switch kernels in-process.
Isa select_isa() {
  static const Isa best = detect_isa();
  const char* env = std::getenv("PYNN_GEMM_KERNEL");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "auto") == 0) return best;
  Isa want;
  if (std::strcmp(env, "avx512") == 0)
    want = Isa::avx512;
  else if (std::strcmp(env, "avx2") == 0)
    want = Isa::avx2;
  else if (std::strcmp(env, "generic") == 0)
    want = Isa::generic;
  else
    throw ValueError(detail::concat("gemm: PYNN_GEMM_KERNEL must be one of auto, avx512, avx2, "
                                    "generic; got '", env, "'"));
  if (static_cast<int>(want) > static_cast<int>(best))
    throw RuntimeError(detail::concat("gemm: PYNN_GEMM_KERNEL=", env,
                                      " asks for a kernel this CPU cannot run (best here: ",
                                      isa_name(best), ")"));
  return want;
}

// ---- a kernel variant: its register tile, cache blocks and routines --------------------------

template <class T>
struct Plan {
  int mr, nr;              // register tile of C
  int64_t kc, mc, nc;      // cache blocks (see the per-ISA comments below)
  // C[0:rows, 0:nr] = alpha * Ap(rows x kc) @ Bp(kc x nr) + beta * C; beta == 0 never reads C.
  void (*kernel)(int rows, int64_t kc, const T* Ap, const T* Bp, T* C, int64_t c_rs, T alpha,
                 T beta);
  // A[0:mc, 0:kc] -> MR-row panels [k][MR] (rows past mc are never read: kernels take `rows`).
  void (*pack_a)(int64_t mc, int64_t kc, const T* A, int64_t a_rs, int64_t a_cs, T* Ap);
  // B[0:kc, 0:nc] -> NR-column panels [k][NR], zero-padded past nc (the kernel computes full NR).
  void (*pack_b)(int64_t kc, int64_t nc, const T* B, int64_t b_rs, int64_t b_cs, T* Bp);
  // tile[i * nr + c] = sum over terms of row i of W . column c of the X^T panel, rows i < rows
  // (GemmPacking::multiply_rows; the terms point at the tile's first row and panel).
  void (*rows_kernel)(int rows, const typename GemmPacking<T>::Term* terms, int nterms, T* tile);
  // C[c, i] = tile[i * nr + c] for i < rows, c < cols.
  void (*store_transposed)(int rows, int cols, const T* tile, T* C, int64_t c_rs);
};

// ---- packing -------------------------------------------------------------------------------
// A panel is `lines` rows (A) or columns (B) of the operand; in the packed form element
// (k, line) sits at dst[k * P + line]. Three source layouts:
//   contig:  the lines are adjacent in memory (src[k * ld + line]): a copy of P elements per k
//   lines:   each line is contiguous along k (src[line * ld + k]): a transpose
//   strided: neither

template <class T, int P>
PYNN_ALWAYS_INLINE void pack_contig(int lines, int64_t kc, const T* src, int64_t ld, T* dst) {
  if (lines == P) {
    for (int64_t k = 0; k < kc; ++k)
      for (int l = 0; l < P; ++l) dst[k * P + l] = src[k * ld + l];
    return;
  }
  for (int64_t k = 0; k < kc; ++k) {
    int l = 0;
    for (; l < lines; ++l) dst[k * P + l] = src[k * ld + l];
    for (; l < P; ++l) dst[k * P + l] = T(0);
  }
}

template <class T, int P>
PYNN_ALWAYS_INLINE void pack_strided(int lines, int64_t kc, const T* src, int64_t line_stride,
                                     int64_t k_stride, T* dst) {
  for (int64_t k = 0; k < kc; ++k) {
    int l = 0;
    for (; l < lines; ++l) dst[k * P + l] = src[l * line_stride + k * k_stride];
    for (; l < P; ++l) dst[k * P + l] = T(0);
  }
}

// Scalar transpose in 8 x 8 tiles so that both the reads and the writes stay within a few lines.
template <class T, int P>
PYNN_ALWAYS_INLINE void pack_lines_scalar(int first, int lines, int64_t kc, const T* src,
                                          int64_t ld, T* dst) {
  for (int64_t k0 = 0; k0 < kc; k0 += 8) {
    const int64_t k1 = std::min<int64_t>(kc, k0 + 8);
    for (int l = first; l < lines; ++l)
      for (int64_t k = k0; k < k1; ++k) dst[k * P + l] = src[l * ld + k];
  }
  for (int l = lines; l < P; ++l)
    for (int64_t k = 0; k < kc; ++k) dst[k * P + l] = T(0);
}

// Picks the layout of one operand panel. `line_stride` steps between lines (rows of A, columns
// of B), `k_stride` along k.
template <class T, int P, class LinesFn>
PYNN_ALWAYS_INLINE void pack_panel(int lines, int64_t kc, const T* src, int64_t line_stride,
                                   int64_t k_stride, T* dst, LinesFn&& pack_lines) {
  if (line_stride == 1 || lines == 1)
    pack_contig<T, P>(lines, kc, src, k_stride, dst);  // k_stride used as the row pitch
  else if (k_stride == 1)
    pack_lines(lines, kc, src, line_stride, dst);
  else
    pack_strided<T, P>(lines, kc, src, line_stride, k_stride, dst);
}

// When the lines are adjacent (row-major B, transposed A) the block is copied KB values of k at
// a time across all of its panels: the source is read as KB long sequential runs instead of one
// short run per k and panel, which the hardware prefetchers cannot follow, and each panel
// receives KB * P contiguous values instead of P (one k at a time scattered 8-float pieces of
// transposed A over every panel: 1024 x 3200 floats packed in 1.6-1.7 ms, against 0.77 ms
// with KB = 8; row-major B, P = 32: 0.13 against 0.10 ms per 2048 x 3200).
template <class T, int P>
PYNN_ALWAYS_INLINE void pack_block_contig(int64_t n, int64_t kc, const T* src, int64_t ld,
                                          T* dst) {
  constexpr int64_t KB = 8;
  const int64_t full = n / P * P;
  for (int64_t k0 = 0; k0 < kc; k0 += KB) {
    const int64_t kb = std::min(KB, kc - k0);
    const T* s = src + k0 * ld;
    for (int64_t l0 = 0; l0 < full; l0 += P) {
      T* d = dst + l0 * kc + k0 * P;
      for (int64_t k = 0; k < kb; ++k)
        for (int l = 0; l < P; ++l) d[k * P + l] = s[k * ld + l0 + l];
    }
    if (full < n) {
      T* d = dst + full * kc + k0 * P;
      for (int64_t k = 0; k < kb; ++k) {
        int l = 0;
        for (; l < n - full; ++l) d[k * P + l] = s[k * ld + full + l];
        for (; l < P; ++l) d[k * P + l] = T(0);
      }
    }
  }
}

template <class T, int P, class LinesFn>
PYNN_ALWAYS_INLINE void pack_block(int64_t n, int64_t kc, const T* src, int64_t line_stride,
                                   int64_t k_stride, T* dst, LinesFn&& pack_lines) {
  if (line_stride == 1 && n > 1) {
    pack_block_contig<T, P>(n, kc, src, k_stride, dst);
    return;
  }
  for (int64_t l0 = 0; l0 < n; l0 += P) {
    const int lines = static_cast<int>(std::min<int64_t>(P, n - l0));
    pack_panel<T, P>(lines, kc, src + l0 * line_stride, line_stride, k_stride, dst + l0 * kc,
                     pack_lines);
  }
}

template <class T, int MR, class LinesFn>
PYNN_ALWAYS_INLINE void pack_a_impl(int64_t mc, int64_t kc, const T* A, int64_t a_rs,
                                    int64_t a_cs, T* Ap, LinesFn&& pack_lines) {
  pack_block<T, MR>(mc, kc, A, a_rs, a_cs, Ap, pack_lines);
}

template <class T, int NR, class LinesFn>
PYNN_ALWAYS_INLINE void pack_b_impl(int64_t kc, int64_t nc, const T* B, int64_t b_rs,
                                    int64_t b_cs, T* Bp, LinesFn&& pack_lines) {
  pack_block<T, NR>(nc, kc, B, b_cs, b_rs, Bp, pack_lines);
}

// ---- generic kernel (any CPU; the compiler vectorises it for the baseline ISA) --------------

template <class T, int MR, int NR, int ROWS>
void kernel_generic_rows(int64_t kc, const T* __restrict Ap, const T* __restrict Bp, T* C,
                         int64_t c_rs, T alpha, T beta) {
  T acc[ROWS][NR];
  for (int i = 0; i < ROWS; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = T(0);
  for (int64_t k = 0; k < kc; ++k) {
    for (int i = 0; i < ROWS; ++i) {
      const T a = Ap[k * MR + i];
      for (int j = 0; j < NR; ++j) acc[i][j] += a * Bp[k * NR + j];
    }
  }
  for (int i = 0; i < ROWS; ++i) {
    T* c = C + i * c_rs;
    if (beta == T(0))
      for (int j = 0; j < NR; ++j) c[j] = alpha * acc[i][j];
    else
      for (int j = 0; j < NR; ++j) c[j] = alpha * acc[i][j] + beta * c[j];
  }
}

template <class T, int MR, int NR>
void kernel_generic(int rows, int64_t kc, const T* Ap, const T* Bp, T* C, int64_t c_rs, T alpha,
                    T beta) {
  static_assert(MR == 4, "update the switch");
  switch (rows) {
    case 1: return kernel_generic_rows<T, MR, NR, 1>(kc, Ap, Bp, C, c_rs, alpha, beta);
    case 2: return kernel_generic_rows<T, MR, NR, 2>(kc, Ap, Bp, C, c_rs, alpha, beta);
    case 3: return kernel_generic_rows<T, MR, NR, 3>(kc, Ap, Bp, C, c_rs, alpha, beta);
    default: return kernel_generic_rows<T, MR, NR, 4>(kc, Ap, Bp, C, c_rs, alpha, beta);
  }
}

// Weights-in-place tile (GemmPacking::multiply_rows): rows of W broadcast, X^T panel as vector.
template <class T, int NR, int ROWS>
void rows_generic_rows(const typename GemmPacking<T>::Term* terms, int nterms, T* tile) {
  T acc[ROWS][NR];
  for (int i = 0; i < ROWS; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = T(0);
  for (int t = 0; t < nterms; ++t) {
    const T* Xt = terms[t].Xt;
    for (int64_t k = 0; k < terms[t].K; ++k)
      for (int i = 0; i < ROWS; ++i) {
        const T a = terms[t].W[i * terms[t].w_rs + k];
        for (int j = 0; j < NR; ++j) acc[i][j] += a * Xt[k * NR + j];
      }
  }
  for (int i = 0; i < ROWS; ++i)
    for (int j = 0; j < NR; ++j) tile[i * NR + j] = acc[i][j];
}

template <class T, int NR>
void store_transposed_generic(int rows, int cols, const T* tile, T* C, int64_t c_rs) {
  for (int c = 0; c < cols; ++c)
    for (int i = 0; i < rows; ++i) C[c * c_rs + i] = tile[i * NR + c];
}

template <class T, int MR, int NR>
void rows_generic(int rows, const typename GemmPacking<T>::Term* terms, int nterms, T* tile) {
  static_assert(MR == 4, "update the switch");
  switch (rows) {
    case 1: return rows_generic_rows<T, NR, 1>(terms, nterms, tile);
    case 2: return rows_generic_rows<T, NR, 2>(terms, nterms, tile);
    case 3: return rows_generic_rows<T, NR, 3>(terms, nterms, tile);
    default: return rows_generic_rows<T, NR, 4>(terms, nterms, tile);
  }
}

template <class T, int P>
void pack_lines_generic(int lines, int64_t kc, const T* src, int64_t ld, T* dst) {
  pack_lines_scalar<T, P>(0, lines, kc, src, ld, dst);
}

template <class T, int MR>
void pack_a_generic(int64_t mc, int64_t kc, const T* A, int64_t a_rs, int64_t a_cs, T* Ap) {
  pack_a_impl<T, MR>(mc, kc, A, a_rs, a_cs, Ap, pack_lines_generic<T, MR>);
}

template <class T, int NR>
void pack_b_generic(int64_t kc, int64_t nc, const T* B, int64_t b_rs, int64_t b_cs, T* Bp) {
  pack_b_impl<T, NR>(kc, nc, B, b_rs, b_cs, Bp, pack_lines_generic<T, NR>);
}

// 4 x 8 (float) and 4 x 4 (double): 8 accumulator registers of the 16 that SSE2 and NEON have.
template <class T>
Plan<T> generic_plan() {
  constexpr int MR = 4, NR = std::is_same<T, float>::value ? 8 : 4;
  return Plan<T>{MR, NR, 256, 512, 256, kernel_generic<T, MR, NR>, pack_a_generic<T, MR>,
                 pack_b_generic<T, NR>, rows_generic<T, MR, NR>, store_transposed_generic<T, NR>};
}

#if PYNN_GEMM_X86
// ---- AVX2 packing (shared by the AVX2 and AVX-512 plans) ------------------------------------

// Transposing pack: full groups of W lines go through W x W register transposes, the rest
// (panel edges only) through the scalar tiles.
template <int P>
PYNN_TARGET_AVX2 void pack_lines_avx2(int lines, int64_t kc, const float* src, int64_t ld,
                                      float* dst) {
  int l0 = 0;
  for (; l0 + 8 <= lines; l0 += 8) {
    const float* s = src + l0 * ld;
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) transpose8_block(s + k, ld, 8, dst + k * P + l0, P, 8);
    for (; k < kc; ++k)
      for (int i = 0; i < 8; ++i) dst[k * P + l0 + i] = s[i * ld + k];
  }
  pack_lines_scalar<float, P>(l0, lines, kc, src, ld, dst);
}

template <int P>
PYNN_TARGET_AVX2 void pack_lines_avx2(int lines, int64_t kc, const double* src, int64_t ld,
                                      double* dst) {
  int l0 = 0;
  for (; l0 + 4 <= lines; l0 += 4) {
    const double* s = src + l0 * ld;
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
      __m256d r[4];
      for (int i = 0; i < 4; ++i) r[i] = _mm256_loadu_pd(s + i * ld + k);
      transpose4(r);
      for (int i = 0; i < 4; ++i) _mm256_storeu_pd(dst + (k + i) * P + l0, r[i]);
    }
    for (; k < kc; ++k)
      for (int i = 0; i < 4; ++i) dst[k * P + l0 + i] = s[i * ld + k];
  }
  pack_lines_scalar<double, P>(l0, lines, kc, src, ld, dst);
}

template <class T, int MR>
PYNN_TARGET_AVX2 void pack_a_avx2(int64_t mc, int64_t kc, const T* A, int64_t a_rs, int64_t a_cs,
                                  T* Ap) {
  pack_a_impl<T, MR>(mc, kc, A, a_rs, a_cs, Ap, [](int l, int64_t k, const T* s, int64_t ld, T* d) {
    pack_lines_avx2<MR>(l, k, s, ld, d);
  });
}

template <class T, int NR>
PYNN_TARGET_AVX2 void pack_b_avx2(int64_t kc, int64_t nc, const T* B, int64_t b_rs, int64_t b_cs,
                                  T* Bp) {
  pack_b_impl<T, NR>(kc, nc, B, b_rs, b_cs, Bp, [](int l, int64_t k, const T* s, int64_t ld, T* d) {
    pack_lines_avx2<NR>(l, k, s, ld, d);
  });
}

// ---- vector micro-kernels -------------------------------------------------------------------
// One template per ISA over the element type through a small traits struct; ROWS (1..MR) is a
// template argument so that an M edge (and M < MR, e.g. batch-1 layers) costs only its rows.
// The k loop is the whole kernel: NV vector loads of B, then for each row one broadcast of A
// and NV FMAs into independent accumulators. C is prefetched at entry so that its first touch
// after the k loop does not stall on L3/DRAM.

struct Avx512F {
  using V = __m512;
  using S = float;
  static constexpr int W = 16;
  PYNN_TARGET_AVX512 static PYNN_ALWAYS_INLINE V zero() { return _mm512_setzero_ps(); }
  PYNN_TARGET_AVX512 static PYNN_ALWAYS_INLINE V load(const S* p) { return _mm512_load_ps(p); }
  PYNN_TARGET_AVX512 static PYNN_ALWAYS_INLINE V loadu(const S* p) { return _mm512_loadu_ps(p); }
  PYNN_TARGET_AVX512 static PYNN_ALWAYS_INLINE void storeu(S* p, V v) { _mm512_storeu_ps(p, v); }
  PYNN_TARGET_AVX512 static PYNN_ALWAYS_INLINE V set1(S x) { return _mm512_set1_ps(x); }
  PYNN_TARGET_AVX512 static PYNN_ALWAYS_INLINE V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  PYNN_TARGET_AVX512 static PYNN_ALWAYS_INLINE V mul(V a, V b) { return _mm512_mul_ps(a, b); }
};
struct Avx512D {
  using V = __m512d;
  using S = double;
  static constexpr int W = 8;
  PYNN_TARGET_AVX512 static PYNN_ALWAYS_INLINE V zero() { return _mm512_setzero_pd(); }
  PYNN_TARGET_AVX512 static PYNN_ALWAYS_INLINE V load(const S* p) { return _mm512_load_pd(p); }
  PYNN_TARGET_AVX512 static PYNN_ALWAYS_INLINE V loadu(const S* p) { return _mm512_loadu_pd(p); }
  PYNN_TARGET_AVX512 static PYNN_ALWAYS_INLINE void storeu(S* p, V v) { _mm512_storeu_pd(p, v); }
  PYNN_TARGET_AVX512 static PYNN_ALWAYS_INLINE V set1(S x) { return _mm512_set1_pd(x); }
  PYNN_TARGET_AVX512 static PYNN_ALWAYS_INLINE V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  PYNN_TARGET_AVX512 static PYNN_ALWAYS_INLINE V mul(V a, V b) { return _mm512_mul_pd(a, b); }
};
struct Avx2F {
  using V = __m256;
  using S = float;
  static constexpr int W = 8;
  PYNN_TARGET_AVX2 static PYNN_ALWAYS_INLINE V zero() { return _mm256_setzero_ps(); }
  PYNN_TARGET_AVX2 static PYNN_ALWAYS_INLINE V load(const S* p) { return _mm256_load_ps(p); }
  PYNN_TARGET_AVX2 static PYNN_ALWAYS_INLINE V loadu(const S* p) { return _mm256_loadu_ps(p); }
  PYNN_TARGET_AVX2 static PYNN_ALWAYS_INLINE void storeu(S* p, V v) { _mm256_storeu_ps(p, v); }
  PYNN_TARGET_AVX2 static PYNN_ALWAYS_INLINE V set1(S x) { return _mm256_set1_ps(x); }
  PYNN_TARGET_AVX2 static PYNN_ALWAYS_INLINE V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  PYNN_TARGET_AVX2 static PYNN_ALWAYS_INLINE V mul(V a, V b) { return _mm256_mul_ps(a, b); }
};
struct Avx2D {
  using V = __m256d;
  using S = double;
  static constexpr int W = 4;
  PYNN_TARGET_AVX2 static PYNN_ALWAYS_INLINE V zero() { return _mm256_setzero_pd(); }
  PYNN_TARGET_AVX2 static PYNN_ALWAYS_INLINE V load(const S* p) { return _mm256_load_pd(p); }
  PYNN_TARGET_AVX2 static PYNN_ALWAYS_INLINE V loadu(const S* p) { return _mm256_loadu_pd(p); }
  PYNN_TARGET_AVX2 static PYNN_ALWAYS_INLINE void storeu(S* p, V v) { _mm256_storeu_pd(p, v); }
  PYNN_TARGET_AVX2 static PYNN_ALWAYS_INLINE V set1(S x) { return _mm256_set1_pd(x); }
  PYNN_TARGET_AVX2 static PYNN_ALWAYS_INLINE V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  PYNN_TARGET_AVX2 static PYNN_ALWAYS_INLINE V mul(V a, V b) { return _mm256_mul_pd(a, b); }
};

// The body is the same for every ISA, but GCC will only inline intrinsics into a function that
// carries their target, so it is stamped out once per target attribute by this macro.
// PYNN_UNROLL_TILE marks the loops over the register tile's rows and vectors: unless GCC unrolls
// them completely it keeps acc[][] as a stack array outside the k loop, and each call zeroed it
// there and went through it again for C (12% of the kernel's samples in the LSTM step, whose
// 8 x 32 x 256 tiles are short; forward T100 B32 128 -> 256: 14.3 -> 13.8 ms, 5 of 5 rounds).
#define PYNN_UNROLL_TILE _Pragma("GCC unroll 8")
#define PYNN_GEMM_DEFINE_KERNEL_BODY(NAME, TARGET)                                              \
  template <class Vt, int MR, int NV, int ROWS>                                                 \
  TARGET PYNN_ALWAYS_INLINE void NAME(int64_t kc, const typename Vt::S* __restrict Ap,          \
                                      const typename Vt::S* __restrict Bp, typename Vt::S* C,   \
                                      int64_t c_rs, typename Vt::S alpha,                       \
                                      typename Vt::S beta) {                                    \
    using V = typename Vt::V;                                                                   \
    constexpr int NR = NV * Vt::W;                                                              \
    PYNN_UNROLL_TILE for (int i = 0; i < ROWS; ++i) {                                           \
      _mm_prefetch(reinterpret_cast<const char*>(C + i * c_rs), _MM_HINT_T0);                   \
      _mm_prefetch(reinterpret_cast<const char*>(C + i * c_rs + NR - 1), _MM_HINT_T0);          \
    }                                                                                           \
    V acc[ROWS][NV];                                                                            \
    PYNN_UNROLL_TILE for (int i = 0; i < ROWS; ++i)                                             \
      PYNN_UNROLL_TILE for (int v = 0; v < NV; ++v) acc[i][v] = Vt::zero();                     \
    _Pragma("GCC unroll 4") for (int64_t k = 0; k < kc; ++k) {                                  \
      V b[NV];                                                                                  \
      PYNN_UNROLL_TILE for (int v = 0; v < NV; ++v) b[v] = Vt::load(Bp + v * Vt::W);            \
      PYNN_UNROLL_TILE for (int i = 0; i < ROWS; ++i) {                                         \
        const V a = Vt::set1(Ap[i]);                                                            \
        PYNN_UNROLL_TILE for (int v = 0; v < NV; ++v) acc[i][v] = Vt::fma(a, b[v], acc[i][v]);  \
      }                                                                                         \
      Ap += MR;                                                                                 \
      Bp += NR;                                                                                 \
    }                                                                                           \
    const V va = Vt::set1(alpha);                                                               \
    if (beta == 0) {                                                                            \
      PYNN_UNROLL_TILE for (int i = 0; i < ROWS; ++i)                                           \
        PYNN_UNROLL_TILE for (int v = 0; v < NV; ++v)                                           \
          Vt::storeu(C + i * c_rs + v * Vt::W, Vt::mul(va, acc[i][v]));                         \
    } else {                                                                                    \
      const V vb = Vt::set1(beta);                                                              \
      PYNN_UNROLL_TILE for (int i = 0; i < ROWS; ++i)                                           \
        PYNN_UNROLL_TILE for (int v = 0; v < NV; ++v) {                                         \
          typename Vt::S* c = C + i * c_rs + v * Vt::W;                                         \
          Vt::storeu(c, Vt::fma(vb, Vt::loadu(c), Vt::mul(va, acc[i][v])));                     \
        }                                                                                       \
    }                                                                                           \
  }
PYNN_GEMM_DEFINE_KERNEL_BODY(kernel_body_avx512, PYNN_TARGET_AVX512)
PYNN_GEMM_DEFINE_KERNEL_BODY(kernel_body_avx2, PYNN_TARGET_AVX2)
#undef PYNN_GEMM_DEFINE_KERNEL_BODY

// The weights-in-place tile: the same register tile with A's MR rows read from W's rows
// (ROWS pointers, one broadcast each per k) instead of a packed panel. It leaves the tile in
// an aligned buffer; multiply_rows transposes it into C.
#define PYNN_GEMM_DEFINE_ROWS_BODY(NAME, TARGET)                                                \
  template <class Vt, int NV, int ROWS>                                                         \
  TARGET PYNN_ALWAYS_INLINE void NAME(const typename GemmPacking<typename Vt::S>::Term* terms,  \
                                      int nterms, typename Vt::S* tile) {                       \
    using V = typename Vt::V;                                                                   \
    using S = typename Vt::S;                                                                   \
    constexpr int NR = NV * Vt::W;                                                              \
    V acc[ROWS][NV];                                                                            \
    PYNN_UNROLL_TILE for (int i = 0; i < ROWS; ++i)                                             \
      PYNN_UNROLL_TILE for (int v = 0; v < NV; ++v) acc[i][v] = Vt::zero();                     \
    for (int t = 0; t < nterms; ++t) {                                                          \
      const S* a[ROWS];                                                                         \
      PYNN_UNROLL_TILE for (int i = 0; i < ROWS; ++i) a[i] = terms[t].W + i * terms[t].w_rs;    \
      const S* __restrict Bp = terms[t].Xt;                                                     \
      const int64_t K = terms[t].K;                                                             \
      _Pragma("GCC unroll 4") for (int64_t k = 0; k < K; ++k) {                                 \
        V b[NV];                                                                                \
        PYNN_UNROLL_TILE for (int v = 0; v < NV; ++v) b[v] = Vt::load(Bp + v * Vt::W);          \
        PYNN_UNROLL_TILE for (int i = 0; i < ROWS; ++i) {                                       \
          const V x = Vt::set1(a[i][k]);                                                        \
          PYNN_UNROLL_TILE for (int v = 0; v < NV; ++v) acc[i][v] = Vt::fma(x, b[v], acc[i][v]); \
        }                                                                                       \
        Bp += NR;                                                                               \
      }                                                                                         \
    }                                                                                           \
    PYNN_UNROLL_TILE for (int i = 0; i < ROWS; ++i)                                             \
      PYNN_UNROLL_TILE for (int v = 0; v < NV; ++v)                                             \
        Vt::storeu(tile + i * NR + v * Vt::W, acc[i][v]);                                       \
  }
PYNN_GEMM_DEFINE_ROWS_BODY(rows_body_avx512, PYNN_TARGET_AVX512)
PYNN_GEMM_DEFINE_ROWS_BODY(rows_body_avx2, PYNN_TARGET_AVX2)
#undef PYNN_GEMM_DEFINE_ROWS_BODY
#undef PYNN_UNROLL_TILE

#define PYNN_GEMM_ROWS_KERNEL(NAME, TARGET, BODY, VT, MR, NV)                                  \
  template <int ROWS>                                                                          \
  TARGET void NAME##_rows(const GemmPacking<VT::S>::Term* terms, int nterms, VT::S* tile) {    \
    BODY<VT, NV, ROWS>(terms, nterms, tile);                                                   \
  }                                                                                            \
  TARGET void NAME(int rows, const GemmPacking<VT::S>::Term* terms, int nterms, VT::S* tile) { \
    static_assert(MR == 8 || MR == 6, "update the switch");                                    \
    switch (rows) {                                                                            \
      case 1: return NAME##_rows<1>(terms, nterms, tile);                                      \
      case 2: return NAME##_rows<2>(terms, nterms, tile);                                      \
      case 3: return NAME##_rows<3>(terms, nterms, tile);                                      \
      case 4: return NAME##_rows<4>(terms, nterms, tile);                                      \
      case 5: return NAME##_rows<5>(terms, nterms, tile);                                      \
      case 6: return NAME##_rows<6>(terms, nterms, tile);                                      \
      case 7: return NAME##_rows<MR == 8 ? 7 : 6>(terms, nterms, tile);                        \
      default: return NAME##_rows<MR>(terms, nterms, tile);                                    \
    }                                                                                          \
  }
PYNN_GEMM_ROWS_KERNEL(r512f, PYNN_TARGET_AVX512, rows_body_avx512, Avx512F, 8, 2)
PYNN_GEMM_ROWS_KERNEL(r512d, PYNN_TARGET_AVX512, rows_body_avx512, Avx512D, 8, 2)
PYNN_GEMM_ROWS_KERNEL(r256f, PYNN_TARGET_AVX2, rows_body_avx2, Avx2F, 6, 2)
PYNN_GEMM_ROWS_KERNEL(r256d, PYNN_TARGET_AVX2, rows_body_avx2, Avx2D, 6, 2)
#undef PYNN_GEMM_ROWS_KERNEL

// The tile's W x W blocks go out through the register transposes of the packers, whole blocks
// only; a partial block (an N edge of fewer than W rows, a batch edge) takes the scalar loop.
template <int NR>
PYNN_TARGET_AVX2 void store_transposed_avx2(int rows, int cols, const float* tile, float* C,
                                            int64_t c_rs) {
  int c0 = 0;
  if (rows == 8) {
    for (; c0 + 8 <= cols; c0 += 8) transpose8_block(tile + c0, NR, 8, C + c0 * c_rs, c_rs, 8);
  }
  store_transposed_generic<float, NR>(rows, cols - c0, tile + c0, C + c0 * c_rs, c_rs);
}

template <int NR>
PYNN_TARGET_AVX2 void store_transposed_avx2(int rows, int cols, const double* tile, double* C,
                                            int64_t c_rs) {
  int i0 = 0;
  for (; i0 + 4 <= rows; i0 += 4) {
    int c0 = 0;
    for (; c0 + 4 <= cols; c0 += 4) {
      __m256d r[4];
      for (int i = 0; i < 4; ++i) r[i] = _mm256_load_pd(tile + (i0 + i) * NR + c0);
      transpose4(r);
      for (int j = 0; j < 4; ++j) _mm256_storeu_pd(C + (c0 + j) * c_rs + i0, r[j]);
    }
    store_transposed_generic<double, NR>(4, cols - c0, tile + i0 * NR + c0, C + c0 * c_rs + i0,
                                         c_rs);
  }
  store_transposed_generic<double, NR>(rows - i0, cols, tile + i0 * NR, C + i0, c_rs);
}

#define PYNN_GEMM_KERNEL_ROWS(NAME, TARGET, BODY, VT, MR, NV)                                  \
  template <int ROWS>                                                                          \
  TARGET void NAME##_rows(int64_t kc, const VT::S* Ap, const VT::S* Bp, VT::S* C, int64_t c_rs, \
                          VT::S alpha, VT::S beta) {                                           \
    BODY<VT, MR, NV, ROWS>(kc, Ap, Bp, C, c_rs, alpha, beta);                                  \
  }

// AVX-512, float: 8 x 32 tile = 16 zmm accumulators + 2 B vectors + 1 broadcast of the 32
// registers. 16 independent FMA chains cover the FMA latency (4 cycles) at 1-2 FMA/cycle; per k
// there are 2 vector loads + 8 broadcasts for 16 FMAs, well inside two loads per cycle. MR = 8
// also divides the batch sizes of the linear/LSTM shapes (M = 32, 256) without an edge.
PYNN_GEMM_KERNEL_ROWS(k512f, PYNN_TARGET_AVX512, kernel_body_avx512, Avx512F, 8, 2)
// AVX-512, double: the same 8 x 16 tile shape in doubles.
PYNN_GEMM_KERNEL_ROWS(k512d, PYNN_TARGET_AVX512, kernel_body_avx512, Avx512D, 8, 2)
// AVX2: 16 ymm registers -> 6 x 2 vectors = 12 accumulators + 2 B + 1 broadcast.
PYNN_GEMM_KERNEL_ROWS(k256f, PYNN_TARGET_AVX2, kernel_body_avx2, Avx2F, 6, 2)
PYNN_GEMM_KERNEL_ROWS(k256d, PYNN_TARGET_AVX2, kernel_body_avx2, Avx2D, 6, 2)
#undef PYNN_GEMM_KERNEL_ROWS

template <class T>
void kernel_avx512(int rows, int64_t kc, const T* Ap, const T* Bp, T* C, int64_t c_rs, T alpha,
                   T beta);
template <class T>
void kernel_avx2(int rows, int64_t kc, const T* Ap, const T* Bp, T* C, int64_t c_rs, T alpha,
                 T beta);

#define PYNN_GEMM_SWITCH8(F)                                  \
  switch (rows) {                                             \
    case 1: return F<1>(kc, Ap, Bp, C, c_rs, alpha, beta);    \
    case 2: return F<2>(kc, Ap, Bp, C, c_rs, alpha, beta);    \
    case 3: return F<3>(kc, Ap, Bp, C, c_rs, alpha, beta);    \
    case 4: return F<4>(kc, Ap, Bp, C, c_rs, alpha, beta);    \
    case 5: return F<5>(kc, Ap, Bp, C, c_rs, alpha, beta);    \
    case 6: return F<6>(kc, Ap, Bp, C, c_rs, alpha, beta);    \
    case 7: return F<7>(kc, Ap, Bp, C, c_rs, alpha, beta);    \
    default: return F<8>(kc, Ap, Bp, C, c_rs, alpha, beta);   \
  }
#define PYNN_GEMM_SWITCH6(F)                                  \
  switch (rows) {                                             \
    case 1: return F<1>(kc, Ap, Bp, C, c_rs, alpha, beta);    \
    case 2: return F<2>(kc, Ap, Bp, C, c_rs, alpha, beta);    \
    case 3: return F<3>(kc, Ap, Bp, C, c_rs, alpha, beta);    \
    case 4: return F<4>(kc, Ap, Bp, C, c_rs, alpha, beta);    \
    case 5: return F<5>(kc, Ap, Bp, C, c_rs, alpha, beta);    \
    default: return F<6>(kc, Ap, Bp, C, c_rs, alpha, beta);   \
  }

template <>
void kernel_avx512<float>(int rows, int64_t kc, const float* Ap, const float* Bp, float* C,
                          int64_t c_rs, float alpha, float beta) {
  PYNN_GEMM_SWITCH8(k512f_rows)
}
template <>
void kernel_avx512<double>(int rows, int64_t kc, const double* Ap, const double* Bp, double* C,
                           int64_t c_rs, double alpha, double beta) {
  PYNN_GEMM_SWITCH8(k512d_rows)
}
template <>
void kernel_avx2<float>(int rows, int64_t kc, const float* Ap, const float* Bp, float* C,
                        int64_t c_rs, float alpha, float beta) {
  PYNN_GEMM_SWITCH6(k256f_rows)
}
template <>
void kernel_avx2<double>(int rows, int64_t kc, const double* Ap, const double* Bp, double* C,
                         int64_t c_rs, double alpha, double beta) {
  PYNN_GEMM_SWITCH6(k256d_rows)
}
#undef PYNN_GEMM_SWITCH8
#undef PYNN_GEMM_SWITCH6

// Cache blocks, chosen for the machine this was tuned on (AMD EPYC, family 25 model 17 = Zen 4:
// 32 KB 8-way L1D and 1 MB 8-way L2 per core, 32 MB L3, as sysfs reports them; one 512-bit FMA
// per cycle per core, measured) and sensible on other AVX2/AVX-512 parts (L1D 32-48 KB, L2 1-2 MB):
//   KC: the A micro-panel (MR x KC) must stay in L1 while B streams past it: 8 x 384 floats =
//       12 KB, about a third of L1, the rest holding the B lines in flight and the C tile. A
//       larger KC means fewer passes over C and less packing per flop; 384 was measurably better
//       than 256 on the linear-layer shapes. Doubles: 8 x 192 = 12 KB as well.
//   NC: the packed B block (KC x NC) is reused by every A micro-panel, so it stays in L2:
//       384 x 256 floats = 384 KB, leaving most of the 1 MB L2 to the A micro-panels and C
//       tiles passing through and to the source lines of the next pack; 256 measured better
//       than 512 on the 256-row linear shapes. Doubles: 192 x 256.
//   MC: the packed A block (MC x KC) is read once per B block from L2/L3; it only needs to be
//       large so that B is repacked rarely: 1024 x 384 floats = 1.5 MB, mostly in L3.
// Packing buffers, per thread and shared by float and double (thread_pack_buffer): (MC + MR) x KC +
// KC x (NC + NR) elements of the largest plan used, at most 2.03 MB (AVX-512 float), 1.99 MB
// (AVX2 float), 1.22 MB (AVX-512 double), 1.2 MB (AVX2 double), 1.6 MB (generic double); a
// thread only grows its buffer to what its problems need (small products use a few KB).
template <class T>
Plan<T> avx512_plan();
template <>
Plan<float> avx512_plan<float>() {
  return Plan<float>{8, 32, 384, 1024, 256, kernel_avx512<float>, pack_a_avx2<float, 8>,
                     pack_b_avx2<float, 32>, r512f,
                     store_transposed_avx2<32>};
}
template <>
Plan<double> avx512_plan<double>() {
  return Plan<double>{8, 16, 192, 512, 256, kernel_avx512<double>, pack_a_avx2<double, 8>,
                      pack_b_avx2<double, 16>, r512d,
                      store_transposed_avx2<16>};
}
template <class T>
Plan<T> avx2_plan();
template <>
Plan<float> avx2_plan<float>() {
  return Plan<float>{6, 16, 384, 1020, 256, kernel_avx2<float>, pack_a_avx2<float, 6>,
                     pack_b_avx2<float, 16>, r256f,
                     store_transposed_avx2<16>};
}
template <>
Plan<double> avx2_plan<double>() {
  return Plan<double>{6, 8, 192, 510, 256, kernel_avx2<double>, pack_a_avx2<double, 6>,
                      pack_b_avx2<double, 8>, r256d,
                      store_transposed_avx2<8>};
}
#endif  // PYNN_GEMM_X86

template <class T>
const Plan<T>& plan_for(Isa isa) {
  static const Plan<T> generic = generic_plan<T>();
#if PYNN_GEMM_X86
  static const Plan<T> avx2 = avx2_plan<T>();
  static const Plan<T> avx512 = avx512_plan<T>();
  if (isa == Isa::avx512) return avx512;
  if (isa == Isa::avx2) return avx2;
#endif
  return generic;
}

// ---- per-thread packing buffers -------------------------------------------------------------

// One per thread for both element types (cpu/aligned_buffer.h). Its size never exceeds the
// largest bound in the comment on the cache blocks, so each thread that ever ran a GEMM keeps at
// most ~2 MB.
cpu::AlignedBuffer& thread_pack_buffer() {
  thread_local cpu::AlignedBuffer buffer;
  return buffer;
}

template <class T>
size_t round_up64(size_t n) {
  return (n * sizeof(T) + 63) / 64 * 64 / sizeof(T);
}

// ---- driver -------------------------------------------------------------------------------

template <class T>
struct Problem {
  int64_t M, N, K;
  T alpha;
  const T* A;
  int64_t a_rs, a_cs;
  const T* B;
  int64_t b_rs, b_cs;
  T beta;
  T* C;
  int64_t c_rs;
};

// C[0:mc, 0:nc] = alpha * Ap @ Bp + beta * C over kc values of k: the micro-panels of A outer,
// the B panels streaming past each one. Micro-panel r of A starts at Ap + r * MR * a_len and
// micro-panel j of B at Bp + j * NR * b_len, where a_len / b_len is the k length a panel holds:
// kc for the blocks gemm_cpu packs per K slice, the whole K for panels packed once.
template <class T>
void macro_block(const Plan<T>& pl, int64_t mc, int64_t nc, int64_t kc, const T* Ap,
                 int64_t a_len, const T* Bp, int64_t b_len, T alpha, T beta, T* C, int64_t c_rs) {
  const int MR = pl.mr, NR = pl.nr;
  alignas(64) T edge[8 * 32];  // an MR x NR tile for the N edge (MR <= 8, NR <= 32)
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int rows = static_cast<int>(std::min<int64_t>(MR, mc - ir));
    const T* a = Ap + ir * a_len;
    T* c_row = C + ir * c_rs;
    for (int64_t jr = 0; jr < nc; jr += NR) {
      const int cols = static_cast<int>(std::min<int64_t>(NR, nc - jr));
      const T* b = Bp + jr * b_len;
      if (cols == NR) {
        pl.kernel(rows, kc, a, b, c_row + jr, c_rs, alpha, beta);
        continue;
      }
      pl.kernel(rows, kc, a, b, edge, NR, T(1), T(0));
      for (int i = 0; i < rows; ++i) {
        T* c = c_row + jr + i * c_rs;
        const T* e = edge + i * NR;
        if (beta == T(0))
          for (int j = 0; j < cols; ++j) c[j] = alpha * e[j];
        else
          for (int j = 0; j < cols; ++j) c[j] = alpha * e[j] + beta * c[j];
      }
    }
  }
}

// Computes C[m0:m1, n0:n1] with this thread's own packed copies of the A rows and B columns it
// needs (one task of gemm_cpu's grid).
template <class T>
void gemm_rect(const Plan<T>& pl, const Problem<T>& p, int64_t m0, int64_t m1, int64_t n0,
               int64_t n1) {
  const int MR = pl.mr, NR = pl.nr;
  const int64_t KC = std::min(pl.kc, p.K);
  const int64_t MC = std::min(pl.mc, (m1 - m0 + MR - 1) / MR * MR);
  const int64_t NC = std::min(pl.nc, (n1 - n0 + NR - 1) / NR * NR);
  const size_t a_elems = round_up64<T>(static_cast<size_t>((MC + MR) * KC));
  const size_t b_elems = round_up64<T>(static_cast<size_t>(KC * (NC + NR)));
  T* Ap = thread_pack_buffer().get<T>(a_elems + b_elems);
  T* Bp = Ap + a_elems;

  for (int64_t pc = 0; pc < p.K; pc += KC) {
    const int64_t kc = std::min(KC, p.K - pc);
    const T beta = pc == 0 ? p.beta : T(1);
    for (int64_t ic = m0; ic < m1; ic += MC) {
      const int64_t mc = std::min(MC, m1 - ic);
      pl.pack_a(mc, kc, p.A + ic * p.a_rs + pc * p.a_cs, p.a_rs, p.a_cs, Ap);
      for (int64_t jc = n0; jc < n1; jc += NC) {
        const int64_t nc = std::min(NC, n1 - jc);
        pl.pack_b(kc, nc, p.B + pc * p.b_rs + jc * p.b_cs, p.b_rs, p.b_cs, Bp);
        macro_block(pl, mc, nc, kc, Ap, kc, Bp, kc, p.alpha, beta, p.C + ic * p.c_rs + jc,
                    p.c_rs);
      }
    }
  }
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
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == T(0)) {
    scale_c(M, N, beta, C, c_rs);
    return;
  }
  const Plan<T>& pl = plan_for<T>(select_isa());
  const Problem<T> p{M, N, K, alpha, A, a_rs, a_cs, B, b_rs, b_cs, beta, C, c_rs};

  // C is cut into a grid of gm x gn rectangles on MR/NR panel boundaries; the pool's threads
  // take rectangles from a shared counter until none is left. A rectangle's thread packs its
  // own A rows and B columns, so no packed panel is shared and no thread ever waits for another:
  // when a pool thread wakes late or is preempted (this machine is shared), the others simply
  // take more rectangles, and a serial fallback of parallel_for (nested call, busy pool) just
  // runs them all. Cutting along N packs A gn times, cutting along M packs B gm times.
  //
  // The grid minimises the estimated finishing time, ceil(tasks / threads) rounds of the largest
  // rectangle, counted per k as rows * cols multiply-add lanes plus rows + cols packed elements
  // at about 4 lanes each (a transposing pack moves ~4 floats per cycle, the kernel does 16
  // lanes). Among grids within 3% of the best, the one with the most tasks (up to 2 per thread)
  // wins, which costs a little repacking of the smaller operand and buys the load balancing.
  // Up to 4 per thread repacked 1-3% of the time on the Zen 4 and more on a 2-core Xeon, where
  // 2 per thread took 4% off the 2048-wide linear layer's forward and backward and 2-3% off an
  // LSTM's (ab.py, one process, 13 and 14 of 15 rounds).
  // A skinny M = 32 is cut along N only: every task packs the small A and its own part of B.
  int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  threads = std::max<int64_t>(
      1, std::min<int64_t>(threads, static_cast<int64_t>(2.0 * M * N * K / kGemmMinFlopsPerThread)));
  const int64_t mp = (M + pl.mr - 1) / pl.mr, np = (N + pl.nr - 1) / pl.nr;
  int64_t gm = 1, gn = 1;
  if (threads > 1) {
    const int64_t max_tasks = 2 * threads;
    auto cost = [&](int64_t a, int64_t b) {
      const double rows = double((mp + a - 1) / a) * pl.mr;
      const double cols = double((np + b - 1) / b) * pl.nr;
      return double((a * b + threads - 1) / threads) * (rows * cols + 4.0 * (rows + cols));
    };
    double best = -1;
    for (int64_t a = 1; a <= std::min(mp, max_tasks); ++a)
      for (int64_t b = 1; b <= std::min(np, max_tasks / a); ++b)
        if (best < 0 || cost(a, b) < best) best = cost(a, b);
    double chosen = cost(1, 1);
    for (int64_t a = 1; a <= std::min(mp, max_tasks); ++a)
      for (int64_t b = 1; b <= std::min(np, max_tasks / a); ++b) {
        const double c = cost(a, b);
        if (c <= 1.03 * best && (a * b > gm * gn || (a * b == gm * gn && c < chosen)))
          gm = a, gn = b, chosen = c;
      }
  }
  const int64_t mstep = (mp + gm - 1) / gm * pl.mr, nstep = (np + gn - 1) / gn * pl.nr;
  auto run = [&](int64_t t) {
    const int64_t i = t / gn, j = t % gn;
    const int64_t m0 = i * mstep, m1 = std::min(M, m0 + mstep);
    const int64_t n0 = j * nstep, n1 = std::min(N, n0 + nstep);
    if (m0 < m1 && n0 < n1) gemm_rect(pl, p, m0, m1, n0, n1);
  };
  const int64_t tasks = gm * gn;
  if (tasks == 1) {
    run(0);
    return;
  }
  std::atomic<int64_t> next{0};
  parallel_for(0, std::min(threads, tasks), 1, [&](int64_t, int64_t) {
    for (int64_t t = next.fetch_add(1); t < tasks; t = next.fetch_add(1)) run(t);
  });
}

// ---- operands packed once (GemmPacking) -----------------------------------------------------
// Packed layouts: K is cut into slices of the plan's KC; slice pc of a packed A is the MR-row
// panels of all M rows ([panel][k][MR]) starting at pc * round_up(M, MR), and of a packed B the
// NR-column panels of all N columns starting at pc * round_up(N, NR). Every panel of B then
// starts on a multiple of NR elements (64 bytes), as the kernels' aligned loads require.

namespace {
template <class T>
const Plan<T>& as_plan(const void* p) {
  return *static_cast<const Plan<T>*>(p);
}
int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }
}  // namespace

template <class T>
GemmPacking<T>::GemmPacking() : plan_(&plan_for<T>(select_isa())) {}

template <class T>
size_t GemmPacking<T>::a_size(int64_t M, int64_t K) const {
  return static_cast<size_t>(round_up(M, as_plan<T>(plan_).mr) * K);
}

template <class T>
size_t GemmPacking<T>::b_size(int64_t K, int64_t N) const {
  return static_cast<size_t>(round_up(N, as_plan<T>(plan_).nr) * K);
}

template <class T>
void GemmPacking<T>::pack_a(int64_t M, int64_t K, const T* A, int64_t a_rs, int64_t a_cs,
                            T* Ap) const {
  const Plan<T>& pl = as_plan<T>(plan_);
  const int64_t Mp = round_up(M, pl.mr);
  for (int64_t pc = 0; pc < K; pc += pl.kc)
    pl.pack_a(M, std::min(pl.kc, K - pc), A + pc * a_cs, a_rs, a_cs, Ap + pc * Mp);
}

template <class T>
void GemmPacking<T>::pack_b(int64_t K, int64_t N, const T* B, int64_t b_rs, int64_t b_cs,
                            T* Bp) const {
  const Plan<T>& pl = as_plan<T>(plan_);
  const int64_t Np = round_up(N, pl.nr);
  for (int64_t pc = 0; pc < K; pc += pl.kc)
    pl.pack_b(std::min(pl.kc, K - pc), N, B + pc * b_rs, b_rs, b_cs, Bp + pc * Np);
}

template <class T>
void GemmPacking<T>::multiply(int64_t M, int64_t N, int64_t K, T alpha, const T* Ap,
                              const T* Bp, T beta, T* C, int64_t c_rs) const {
  if (M <= 0 || N <= 0) return;
  const Plan<T>& pl = as_plan<T>(plan_);
  if (K <= 0 || alpha == T(0)) {
    scale_c(M, N, beta, C, c_rs);
    return;
  }
  const int64_t Mp = round_up(M, pl.mr), Np = round_up(N, pl.nr);
  for (int64_t pc = 0; pc < K; pc += pl.kc) {
    const int64_t kc = std::min(pl.kc, K - pc);
    macro_block(pl, M, N, kc, Ap + pc * Mp, kc, Bp + pc * Np, kc, alpha, pc == 0 ? beta : T(1),
                C, c_rs);
  }
}

template <class T>
size_t GemmPacking<T>::x_size(int64_t M, int64_t K) const {
  return static_cast<size_t>(round_up(M, as_plan<T>(plan_).nr) * K);
}

// X^T [K, M] as B panels of the whole K (panel j at Xt + j * NR * K), columns past M zero.
template <class T>
void GemmPacking<T>::pack_x(int64_t M, int64_t K, const T* X, int64_t x_rs, int64_t x_cs,
                            T* Xt) const {
  if (M > 0 && K > 0) as_plan<T>(plan_).pack_b(K, M, X, x_cs, x_rs, Xt);
}

template <class T>
void GemmPacking<T>::multiply_rows(int64_t M, int64_t N, const Term* terms, int nterms, T* C,
                                   int64_t c_rs) const {
  const Plan<T>& pl = as_plan<T>(plan_);
  const int MR = pl.mr, NR = pl.nr;
  PYNN_CHECK(nterms >= 1 && nterms <= 4, "multiply_rows: 1 to 4 terms, got ", nterms);
  alignas(64) T tile[8 * 32];  // MR x NR, MR <= 8 and NR <= 32
  Term at[4];
  for (int64_t n0 = 0; n0 < N; n0 += MR) {
    const int rows = static_cast<int>(std::min<int64_t>(MR, N - n0));
    for (int64_t m0 = 0; m0 < M; m0 += NR) {
      const int cols = static_cast<int>(std::min<int64_t>(NR, M - m0));
      for (int t = 0; t < nterms; ++t)
        at[t] = Term{terms[t].W + n0 * terms[t].w_rs, terms[t].w_rs, terms[t].Xt + m0 * terms[t].K,
                     terms[t].K};
      // The tile's C lines (one per batch row) are fetched while the k loop runs.
      for (int c = 0; c < cols; ++c) __builtin_prefetch(C + (m0 + c) * c_rs + n0, 1);
      pl.rows_kernel(rows, at, nterms, tile);
      pl.store_transposed(rows, cols, tile, C + m0 * c_rs + n0, c_rs);  // column c -> row m0 + c
    }
  }
}

template class GemmPacking<float>;
template class GemmPacking<double>;

template void gemm_cpu<float>(int64_t, int64_t, int64_t, float, const float*, int64_t, int64_t,
                              const float*, int64_t, int64_t, float, float*, int64_t);
template void gemm_cpu<double>(int64_t, int64_t, int64_t, double, const double*, int64_t, int64_t,
                               const double*, int64_t, int64_t, double, double*, int64_t);

// ---- pre-packed operands ---------------------------------------------------------------------
// The loop nest of gemm_rect without its packing: the caller's panels hold the whole K, so a
// KC slice of a panel is contiguous at offset pc * mr (A) or pc * nr (B). K is cut into equal
// slices of at most KC so that no slice is a short remainder.

template <class T>
GemmPanelShape gemm_panel_shape() {
  const Plan<T>& pl = plan_for<T>(select_isa());
  return {pl.mr, pl.nr};
}

bool gemm_selects_avx512() { return select_isa() == Isa::avx512; }

template <class T>
void gemm_pack_a_panels(GemmPanelShape shape, int64_t M, int64_t K, const T* A, int64_t a_rs,
                        int64_t a_cs, T* Ap) {
  if (M <= 0 || K <= 0) return;
  const Plan<T>& pl = plan_for<T>(select_isa());
  PYNN_CHECK(pl.mr == shape.mr && pl.nr == shape.nr, "gemm_pack_a_panels: panels for mr x nr = ",
             shape.mr, " x ", shape.nr, ", the selected kernel uses ", pl.mr, " x ", pl.nr);
  // One block of all K: the plan's packer lays panel i at Ap + i * mr * K, rows past M zero.
  pl.pack_a(M, K, A, a_rs, a_cs, Ap);
}

template <class T>
void gemm_panels(GemmPanelShape shape, int64_t M, int64_t N, int64_t K, const T* Ap, const T* Bp,
                 T beta, T* C, int64_t c_rs) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    scale_c(M, N, beta, C, c_rs);
    return;
  }
  const Plan<T>& pl = plan_for<T>(select_isa());
  PYNN_CHECK(pl.mr == shape.mr && pl.nr == shape.nr, "gemm_panels: panels packed for mr x nr = ",
             shape.mr, " x ", shape.nr, ", the selected kernel uses ", pl.mr, " x ", pl.nr);
  const int64_t slices = (K + pl.kc - 1) / pl.kc;
  const int64_t KC = (K + slices - 1) / slices;
  const int64_t NC = std::max<int64_t>(pl.nr, pl.nc / pl.nr * pl.nr);
  for (int64_t pc = 0; pc < K; pc += KC) {
    const int64_t kc = std::min(KC, K - pc);
    for (int64_t jc = 0; jc < N; jc += NC)
      macro_block(pl, M, std::min(NC, N - jc), kc, Ap + pc * pl.mr, K, Bp + jc * K + pc * pl.nr,
                  K, T(1), pc == 0 ? beta : T(1), C + jc, c_rs);
  }
}

template GemmPanelShape gemm_panel_shape<float>();
template GemmPanelShape gemm_panel_shape<double>();
template void gemm_pack_a_panels<float>(GemmPanelShape, int64_t, int64_t, const float*, int64_t,
                                        int64_t, float*);
template void gemm_pack_a_panels<double>(GemmPanelShape, int64_t, int64_t, const double*,
                                         int64_t, int64_t, double*);
template void gemm_panels<float>(GemmPanelShape, int64_t, int64_t, int64_t, const float*,
                                 const float*, float, float*, int64_t);
template void gemm_panels<double>(GemmPanelShape, int64_t, int64_t, int64_t, const double*,
                                  const double*, double, double*, int64_t);

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
