#pragma once
// A grow-only, 64-byte aligned buffer: the kernels read packed panels with aligned vector loads.
// Its users keep one per thread (thread_local), so that a loop of calls reuses the memory instead
// of mapping and faulting in fresh pages per call; it grows to the largest request and keeps
// that, so each user bounds what it asks for.
#include <cstddef>
#include <memory>
#include <new>

namespace pynn {
namespace cpu {

class AlignedBuffer {
 public:
  // At least `elems` elements of T; the previous contents are not kept when it grows.
  template <class T>
  T* get(size_t elems) {
    const size_t n = elems * sizeof(T);
    if (n > bytes_) {
      mem_.reset();
      mem_.reset(::operator new(n, std::align_val_t(64)));
      bytes_ = n;
    }
    return static_cast<T*>(mem_.get());
  }

  size_t bytes() const { return bytes_; }

  // Gives the memory back (a user that keeps only buffers up to some size).
  void release() {
    mem_.reset();
    bytes_ = 0;
  }

 private:
  struct Free {
    void operator()(void* p) const { ::operator delete(p, std::align_val_t(64)); }
  };
  std::unique_ptr<void, Free> mem_;
  size_t bytes_ = 0;
};

}  // namespace cpu
}  // namespace pynn
