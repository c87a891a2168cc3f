#include "core/tensor.h"

#include <algorithm>
#include <numeric>

namespace pynn {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::Int64: return "int64";
    case DType::Int32: return "int32";
    case DType::UInt8: return "uint8";
    case DType::Bool: return "bool";
    default: return "an unsupported dtype";
  }
}

const char* device_name(Device d) { return d == Device::CUDA ? "cuda" : "cpu"; }

bool TensorView::is_contiguous() const {
  int64_t expected = 1;
  for (int d = dim - 1; d >= 0; --d) {
    if (sizes[d] == 1) continue;
    if (strides[d] != expected) return numel() == 0;
    expected *= sizes[d];
  }
  return true;
}

bool TensorView::is_non_overlapping_and_dense() const {
  if (numel() == 0) return true;
  // Size-1 dims never move the address; the rest must tile memory when sorted by stride.
  int order[kMaxDims];
  int n = 0;
  for (int d = 0; d < dim; ++d)
    if (sizes[d] != 1) order[n++] = d;
  std::sort(order, order + n, [&](int a, int b) { return strides[a] < strides[b]; });
  int64_t expected = 1;
  for (int i = 0; i < n; ++i) {
    if (strides[order[i]] != expected) return false;
    expected *= sizes[order[i]];
  }
  return true;
}

std::string TensorView::shape_str() const {
  std::string s = "[";
  for (int d = 0; d < dim; ++d) s += (d ? ", " : "") + std::to_string(sizes[d]);
  return s + "]";
}

void check_defined(const TensorView& t, const char* op, const char* arg) {
  PYNN_CHECK(t.data != nullptr || t.numel() == 0, op, ": ", arg, " has no data (null pointer)");
}

void check_dim(const TensorView& t, int dim, const char* op, const char* arg) {
  PYNN_CHECK(t.dim == dim, op, ": ", arg, " must be ", dim, "-D, got ", t.dim, "-D with shape ",
             t.shape_str());
}

void check_same_dtype(const TensorView& a, const TensorView& b, const char* op, const char* arg_a,
                      const char* arg_b) {
  PYNN_CHECK_TYPE(a.dtype == b.dtype, op, ": ", arg_a, " (", dtype_name(a.dtype), ") and ", arg_b,
                  " (", dtype_name(b.dtype), ") must have the same dtype");
}

void check_same_device(const TensorView& a, const TensorView& b, const char* op,
                       const char* arg_a, const char* arg_b) {
  PYNN_CHECK(a.device == b.device && a.device_index == b.device_index, op, ": ", arg_a, " is on ",
             device_name(a.device), ":", a.device_index, " but ", arg_b, " is on ",
             device_name(b.device), ":", b.device_index);
}

void check_same_shape(const TensorView& a, const TensorView& b, const char* op, const char* arg_a,
                      const char* arg_b) {
  bool same = a.dim == b.dim;
  for (int d = 0; same && d < a.dim; ++d) same = a.sizes[d] == b.sizes[d];
  PYNN_CHECK(same, op, ": ", arg_a, " has shape ", a.shape_str(), " but ", arg_b, " has shape ",
             b.shape_str());
}

void check_contiguous(const TensorView& t, const char* op, const char* arg) {
  PYNN_CHECK(t.is_contiguous(), op, ": ", arg, " must be contiguous");
}

void check_device(const TensorView& t, Device d, const char* op, const char* arg) {
  PYNN_CHECK(t.device == d, op, ": ", arg, " must be on ", device_name(d), ", got ",
             device_name(t.device));
}

}  // namespace pynn

namespace pynn {
void check_same_dense_layout(const TensorView& a, const TensorView& b, const char* op,
                             const char* arg_a, const char* arg_b) {
  check_same_shape(a, b, op, arg_a, arg_b);
  bool same = true;
  for (int d = 0; d < a.dim; ++d) same = same && (a.sizes[d] == 1 || a.strides[d] == b.strides[d]);
  PYNN_CHECK(same && a.is_non_overlapping_and_dense(), op, ": ", arg_a, " and ", arg_b,
             " must be dense with identical strides");
}
}  // namespace pynn
