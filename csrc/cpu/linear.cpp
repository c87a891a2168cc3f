#include "ops/linear.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/dispatch.h"
#include "core/parallel.h"
#include "cpu/aligned_buffer.h"
#include "cpu/gemm.h"

namespace pynn {

// ---- argument checks, shared with csrc/cuda/linear.cu ------------------------------------------
namespace detail {
namespace {
void check_matrix_out(const TensorView& t, int64_t rows, int64_t cols, const char* op,
                      const char* arg) {
  check_dim(t, 2, op, arg);
  PYNN_CHECK(t.sizes[0] == rows && t.sizes[1] == cols, op, ": ", arg, " has shape ", t.shape_str(),
             ", expected [", rows, ", ", cols, "]");
  // The GEMM writes C rows with unit column stride.
  PYNN_CHECK(cols <= 1 || t.strides[1] == 1, op, ": ", arg, " must have unit column stride");
}

void check_vector(const TensorView& t, int64_t n, const char* op, const char* arg) {
  check_dim(t, 1, op, arg);
  PYNN_CHECK(t.sizes[0] == n, op, ": ", arg, " has ", t.sizes[0], " elements, expected ", n);
}

void check_same(const TensorView& ref, const char* ref_name, const TensorView& t, const char* op,
                const char* arg) {
  check_same_dtype(ref, t, op, ref_name, arg);
  check_same_device(ref, t, op, ref_name, arg);
  check_defined(t, op, arg);
}
}  // namespace

void check_linear_forward_args(const TensorView& input, const TensorView& weight,
                               const std::optional<TensorView>& bias, const TensorView& output) {
  const char* op = "linear";
  check_dim(input, 2, op, "input");
  check_dim(weight, 2, op, "weight");
  check_defined(input, op, "input");
  check_same(input, "input", weight, op, "weight");
  check_same(input, "input", output, op, "output");
  PYNN_CHECK(input.sizes[1] == weight.sizes[1], op, ": input has ", input.sizes[1],
             " features but weight ", weight.shape_str(), " expects ", weight.sizes[1]);
  check_matrix_out(output, input.sizes[0], weight.sizes[0], op, "output");
  if (bias) {
    check_same(input, "input", *bias, op, "bias");
    check_vector(*bias, weight.sizes[0], op, "bias");
  }
}

void check_linear_backward_args(const TensorView& grad_output,
                                const std::optional<TensorView>& input,
                                const std::optional<TensorView>& weight,
                                const std::optional<TensorView>& grad_input,
                                const std::optional<TensorView>& grad_weight,
                                const std::optional<TensorView>& grad_bias) {
  const char* op = "linear_backward";
  check_dim(grad_output, 2, op, "grad_output");
  check_defined(grad_output, op, "grad_output");
  const int64_t M = grad_output.sizes[0], N = grad_output.sizes[1];
  if (grad_input) {
    PYNN_CHECK(weight.has_value(), op, ": grad_input needs weight");
    check_dim(*weight, 2, op, "weight");
    check_same(grad_output, "grad_output", *weight, op, "weight");
    PYNN_CHECK(weight->sizes[0] == N, op, ": weight ", weight->shape_str(), " does not match ",
               N, " output features");
    check_same(grad_output, "grad_output", *grad_input, op, "grad_input");
    check_matrix_out(*grad_input, M, weight->sizes[1], op, "grad_input");
  }
  if (grad_weight) {
    PYNN_CHECK(input.has_value(), op, ": grad_weight needs input");
    check_dim(*input, 2, op, "input");
    check_same(grad_output, "grad_output", *input, op, "input");
    PYNN_CHECK(input->sizes[0] == M, op, ": input ", input->shape_str(), " does not match ", M,
               " rows of grad_output");
    check_same(grad_output, "grad_output", *grad_weight, op, "grad_weight");
    check_matrix_out(*grad_weight, N, input->sizes[1], op, "grad_weight");
  }
  if (grad_bias) {
    check_same(grad_output, "grad_output", *grad_bias, op, "grad_bias");
    check_vector(*grad_bias, N, op, "grad_bias");
  }
}
}  // namespace detail

// ---- kernels ----------------------------------------------------------------------------------
namespace {

// Seeding the output with the broadcast bias lets the GEMM's epilogue (beta = 1) do the
// addition while it writes the product, instead of a second pass reading the product back.
template <class T>
void fill_rows_with_bias(const TensorView& bias, const TensorView& output) {
  const int64_t M = output.sizes[0], N = output.sizes[1];
  const T* b = bias.ptr<T>();
  const int64_t bs = bias.strides[0];
  T* y = output.ptr<T>();
  const int64_t rs = output.strides[0];
  parallel_for(0, M, std::max<int64_t>(1, 32768 / std::max<int64_t>(N, 1)),
               [&](int64_t r0, int64_t r1) {
                 for (int64_t i = r0; i < r1; ++i) {
                   T* row = y + i * rs;
                   for (int64_t j = 0; j < N; ++j) row[j] = b[j * bs];
                 }
               });
}

// grad_bias[j] = sum_i g[i, j]. Rows are split into a fixed number of chunks that each sum into
// their own row of double partials (the inner loop runs along g's rows, contiguous in the usual
// layout); the partials are then added in chunk order, so the result depends only on the thread
// count, never on scheduling.
template <class T>
void bias_grad(const TensorView& g, const TensorView& grad_bias) {
  using Acc = typename acc_type<T>::type;
  const int64_t M = g.sizes[0], N = g.sizes[1];
  const int64_t rs = g.strides[0], cs = g.strides[1];
  const T* gp = g.ptr<T>();
  const int64_t work = M * N;
  const int64_t chunks =
      std::max<int64_t>(1, std::min<int64_t>({static_cast<int64_t>(get_num_threads()),
                                              work / 32768, M}));
  std::vector<Acc> partial(static_cast<size_t>(chunks * N), Acc(0));
  parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      Acc* acc = partial.data() + c * N;
      const int64_t r0 = M * c / chunks, r1 = M * (c + 1) / chunks;
      for (int64_t i = r0; i < r1; ++i) {
        const T* row = gp + i * rs;
        if (cs == 1)
          for (int64_t j = 0; j < N; ++j) acc[j] += row[j];
        else
          for (int64_t j = 0; j < N; ++j) acc[j] += row[j * cs];
      }
    }
  });
  T* out = grad_bias.ptr<T>();
  const int64_t os = grad_bias.strides[0];
  for (int64_t j = 0; j < N; ++j) {
    Acc s = 0;
    for (int64_t c = 0; c < chunks; ++c) s += partial[c * N + j];
    out[j * os] = static_cast<T>(s);
  }
}

// A layer with few outputs (a regression head, a 10-class classifier): N well under the
// GEMM's nr-wide panels, which gemm_cpu fills with output features, so that most of its vector
// lanes stayed idle (256 x 64 -> 1 took 23 us against torch's 4.4). Here the batch is the vector
// operand instead, as in the recurrent single steps: GemmPacking::multiply_rows broadcasts W's
// rows in place and takes each chunk of the batch as X^T packed by its thread. W needs unit
// column stride (an nn.Linear weight has it). Overwrites the output, then adds the bias. Up to
// kNarrowMaxK inputs, so that the chunk buffer a thread keeps stays within nr * 16384 elements
// (2 MiB of float32); wider layers go to gemm_cpu, which blocks K.
constexpr int64_t kNarrowMaxK = 16384;

template <class T>
bool narrow_applies(int64_t M, int64_t N, int64_t K, const TensorView& weight) {
  const int64_t nr = gemm_panel_shape<T>().nr;
  return K > 0 && K <= kNarrowMaxK && N > 0 && 2 * N <= nr && M >= nr / 2 &&
         weight.strides[1] == 1;
}

template <class T>
void narrow_forward(const TensorView& input, const TensorView& weight,
                    const std::optional<TensorView>& bias, const TensorView& output) {
  const int64_t M = input.sizes[0], K = input.sizes[1], N = weight.sizes[0];
  const GemmPacking<T> gp;
  const int64_t nr = gemm_panel_shape<T>().nr;
  // Chunks of whole panels whose X^T stays within 64 KiB (at least one panel), and tasks of at
  // least gemm_cpu's flops per thread, so that a small layer stays on the calling thread.
  const int64_t chunk = std::max<int64_t>(1, 16384 / K / nr) * nr;
  const int64_t chunks = (M + chunk - 1) / chunk;
  const double chunk_flops = 2.0 * double(chunk) * double(N) * double(K);
  const int64_t grain =
      std::max<int64_t>(1, static_cast<int64_t>(kGemmMinFlopsPerThread / chunk_flops));
  const T* x = input.ptr<T>();
  const int64_t x_rs = input.strides[0], x_cs = input.strides[1];
  T* y = output.ptr<T>();
  const int64_t y_rs = output.strides[0];
  const T* b = bias ? bias->ptr<T>() : nullptr;
  const int64_t bs = bias ? bias->strides[0] : 0;
  parallel_for(0, chunks, grain, [&](int64_t c0, int64_t c1) {
    thread_local cpu::AlignedBuffer buf;  // X^T of a chunk
    T* xt = buf.get<T>(gp.x_size(chunk, K));
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t m0 = c * chunk, m = std::min(chunk, M - m0);
      gp.pack_x(m, K, x + m0 * x_rs, x_rs, x_cs, xt);
      const typename GemmPacking<T>::Term term{weight.ptr<T>(), weight.strides[0], xt, K};
      gp.multiply_rows(m, N, &term, 1, y + m0 * y_rs, y_rs);
      if (b)
        for (int64_t i = m0; i < m0 + m; ++i)
          for (int64_t j = 0; j < N; ++j) y[i * y_rs + j] += b[j * bs];
    }
  });
}

void check_cpu(const TensorView& t, const char* op, const char* arg) {
  check_device(t, Device::CPU, op, arg);
}

}  // namespace

void linear_forward_cpu(const TensorView& input, const TensorView& weight,
                        const std::optional<TensorView>& bias, const TensorView& output) {
  detail::check_linear_forward_args(input, weight, bias, output);
  check_cpu(input, "linear", "input");
  dispatch_floating(input.dtype, "linear", "input", [&](auto tag) {
    using T = decltype(tag);
    const int64_t M = input.sizes[0], K = input.sizes[1], N = weight.sizes[0];
    if (narrow_applies<T>(M, N, K, weight)) return narrow_forward<T>(input, weight, bias, output);
    if (bias) fill_rows_with_bias<T>(*bias, output);
    // B = W^T is W read with its strides swapped.
    gemm_cpu<T>(M, N, K, T(1), input.ptr<T>(), input.strides[0], input.strides[1],
                weight.ptr<T>(), weight.strides[1], weight.strides[0], bias ? T(1) : T(0),
                output.ptr<T>(), output.strides[0]);
  });
}

void linear_backward_cpu(const TensorView& grad_output, const std::optional<TensorView>& input,
                         const std::optional<TensorView>& weight,
                         const std::optional<TensorView>& grad_input,
                         const std::optional<TensorView>& grad_weight,
                         const std::optional<TensorView>& grad_bias) {
  detail::check_linear_backward_args(grad_output, input, weight, grad_input, grad_weight,
                                     grad_bias);
  check_cpu(grad_output, "linear_backward", "grad_output");
  const TensorView& g = grad_output;
  dispatch_floating(g.dtype, "linear_backward", "grad_output", [&](auto tag) {
    using T = decltype(tag);
    const int64_t M = g.sizes[0], N = g.sizes[1];
    if (grad_input) {
      // [M, K] = g [M, N] @ W [N, K]
      const TensorView& w = *weight;
      gemm_cpu<T>(M, w.sizes[1], N, T(1), g.ptr<T>(), g.strides[0], g.strides[1], w.ptr<T>(),
                  w.strides[0], w.strides[1], T(0), grad_input->ptr<T>(), grad_input->strides[0]);
    }
    if (grad_weight) {
      // [N, K] = g^T [N, M] @ x [M, K]; g^T is g with its strides swapped.
      const TensorView& x = *input;
      gemm_cpu<T>(N, x.sizes[1], M, T(1), g.ptr<T>(), g.strides[1], g.strides[0], x.ptr<T>(),
                  x.strides[0], x.strides[1], T(0), grad_weight->ptr<T>(),
                  grad_weight->strides[0]);
    }
    if (grad_bias) bias_grad<T>(g, *grad_bias);
  });
}

}  // namespace pynn
