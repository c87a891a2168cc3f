#pragma once
#include <cstddef>
#include <cstdint>

namespace pynn {

// Below this many flops per thread, waking a pool thread costs more than it saves. The pool is
// the OpenMP team torch uses too, whose workers spin between back-to-back ops, so a second
// thread already pays off for a few microseconds of work. On the 2-core Zen 4, M = 32 rows and
// K = 128: N = 128 (1 MFLOP) 13.6 -> 9.9 us, N = 256 24.1 -> 18.9 us with 2 threads (the old
// limit of 1.5 MFLOP per thread ran both on one); N = 64 (0.5 MFLOP) was no faster split.
// gemm_cpu and the callers that split GEMM-shaped work themselves use it.
constexpr double kGemmMinFlopsPerThread = 0.5e6;

// C[M,N] = alpha * A[M,K] @ B[K,N] + beta * C, row-major C with row stride c_rs and unit column
// stride. A and B may have any strides, so transposed operands are just swapped strides.
// beta == 0 never reads C (it may hold NaN). Runs on the pool; serial inside a parallel region.
template <class T>
void gemm_cpu(int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t a_rs, int64_t a_cs,
              const T* B, int64_t b_rs, int64_t b_cs, T beta, T* C, int64_t c_rs);

// Operands packed once and multiplied many times, by the calling thread alone: a time loop keeps
// its recurrent weights packed (and in its core's L2) for every step instead of repacking them
// in each gemm_cpu call. A GemmPacking fixes the micro-kernel (the ISA gemm_cpu would pick now,
// PYNN_GEMM_KERNEL included), so operands packed with it must be multiplied with it.
// Buffers handed to pack_a / pack_b hold a_size / b_size elements and are 64-byte aligned.
template <class T>
class GemmPacking {
 public:
  GemmPacking();
  size_t a_size(int64_t M, int64_t K) const;
  size_t b_size(int64_t K, int64_t N) const;
  void pack_a(int64_t M, int64_t K, const T* A, int64_t a_rs, int64_t a_cs, T* Ap) const;
  void pack_b(int64_t K, int64_t N, const T* B, int64_t b_rs, int64_t b_cs, T* Bp) const;
  // C = alpha * A @ B + beta * C from the packed forms of A [M, K] and B [K, N]; serial.
  void multiply(int64_t M, int64_t N, int64_t K, T alpha, const T* Ap, const T* Bp, T beta, T* C,
                int64_t c_rs) const;

  // ---- weights read in place ----
  // C[M, N] = sum over terms of X_t[M, K_t] @ W_t[N, K_t]^T for a small M (a batch), computed
  // as C^T = W @ X^T: the micro-kernel broadcasts MR rows of W straight from memory, each
  // element once per k, and takes the batch as its vector operand from X^T packed by pack_x
  // (so M should fill most of the nr-wide panels). W is never repacked: a weight that may
  // change between calls (an LSTMCell step driven from Python) costs no packing, and a fixed
  // one stays in the caller's cache as it is. The tile comes out transposed into C. W must
  // have unit column stride; 1 to 4 terms; serial.
  struct Term {
    const T* W;       // row n of W_t at W + n * w_rs
    int64_t w_rs;
    const T* Xt;      // X_t^T as pack_x left it
    int64_t K;
  };
  size_t x_size(int64_t M, int64_t K) const;  // elements of pack_x's output
  void pack_x(int64_t M, int64_t K, const T* X, int64_t x_rs, int64_t x_cs, T* Xt) const;
  void multiply_rows(int64_t M, int64_t N, const Term* terms, int nterms, T* C,
                     int64_t c_rs) const;

 private:
  const void* plan_;
};

// True when gemm_cpu would run its AVX-512 kernel now (the CPU has it and PYNN_GEMM_KERNEL does
// not ask for another): other hand-vectorised CPU kernels follow the same choice.
bool gemm_selects_avx512();

// ---- pre-packed operands (conv2d's implicit GEMM) ----
// Operands laid out as the micro-kernel reads them, for callers that build panels straight
// from their own data (conv2d packs its column matrix from the input, never materialising it):
//   A[M,K] as ceil(M/mr) panels, panel i at Ap + i*mr*K holding element (k, r) at k*mr + r
//          (row i*mr + r; rows past M zero);
//   B[K,N] as ceil(N/nr) panels, panel j at Bp + j*nr*K holding element (k, c) at k*nr + c
//          (column j*nr + c; columns past N zero). Bp must be 64-byte aligned.
// mr and nr are those of the kernel PYNN_GEMM_KERNEL selects now (gemm_panel_shape); a caller
// reads them once per operation and passes the same values back.
struct GemmPanelShape {
  int mr, nr;
};
template <class T>
GemmPanelShape gemm_panel_shape();
// Packs rows [0, M) of A[M,K] (any strides) as the A panels above, with the kernel's vector
// transposes; serial. Rows [m0, m1) of a larger A, m0 a multiple of mr, go to Ap + m0 * K, so
// threads can pack disjoint row ranges of one operand.
template <class T>
void gemm_pack_a_panels(GemmPanelShape shape, int64_t M, int64_t K, const T* A, int64_t a_rs,
                        int64_t a_cs, T* Ap);
// C[M,N] = Ap @ Bp + beta * C (beta == 0 never reads C), serial: the caller owns the threading.
template <class T>
void gemm_panels(GemmPanelShape shape, int64_t M, int64_t N, int64_t K, const T* Ap, const T* Bp,
                 T beta, T* C, int64_t c_rs);

}  // namespace pynn
