#pragma once
// A non-owning view of a tensor that Python owns: what crosses from torch into the core.
#include <cstdint>
#include <string>

#include "core/error.h"

namespace pynn {

enum class DType : int {
  Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3, Int64 = 4, Int32 = 5, UInt8 = 6, Bool = 7,
  Unknown = -1
};
enum class Device : int { CPU = 0, CUDA = 1 };

const char* dtype_name(DType t);
const char* device_name(Device d);

constexpr int kMaxDims = 8;

struct TensorView {
  void* data = nullptr;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};  // in elements, as torch reports them
  int dim = 0;
  DType dtype = DType::Unknown;
  Device device = Device::CPU;
  int device_index = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (int d = 0; d < dim; ++d) n *= sizes[d];
    return n;
  }
  int64_t size(int d) const { return sizes[d < 0 ? d + dim : d]; }
  int64_t stride(int d) const { return strides[d < 0 ? d + dim : d]; }
  bool is_cuda() const { return device == Device::CUDA; }
  bool is_contiguous() const;
  // Every element has its own address and the addresses fill one block (any dim order).
  bool is_non_overlapping_and_dense() const;
  std::string shape_str() const;

  template <class T>
  T* ptr() const { return static_cast<T*>(data); }
};

// Argument checks shared by every op; `op` and `arg` name the culprit in the message.
void check_defined(const TensorView& t, const char* op, const char* arg);
void check_dim(const TensorView& t, int dim, const char* op, const char* arg);
void check_same_dtype(const TensorView& a, const TensorView& b, const char* op, const char* arg_a,
                      const char* arg_b);
void check_same_device(const TensorView& a, const TensorView& b, const char* op, const char* arg_a,
                       const char* arg_b);
void check_same_shape(const TensorView& a, const TensorView& b, const char* op, const char* arg_a,
                      const char* arg_b);
void check_contiguous(const TensorView& t, const char* op, const char* arg);
void check_device(const TensorView& t, Device d, const char* op, const char* arg);

}  // namespace pynn

namespace pynn {
// Elementwise ops walk memory flat: both tensors must share shape and strides and be dense.
void check_same_dense_layout(const TensorView& a, const TensorView& b, const char* op,
                             const char* arg_a, const char* arg_b);
}  // namespace pynn
