#pragma once
// on_device<D>(name, fn): fn wrapped so that every non-empty tensor argument must be on device
// kind D (and, on CUDA, all on one GPU) before fn runs. The entry points compare their tensors
// with each other, but a call whose tensors all sit on the wrong kind of device would pass
// those checks and then read host memory as device memory (or the reverse): a crash, not an
// error. Registering every entry point through this wrapper closes that hole once for all ops,
// including ones written later. Empty tensors are never dereferenced, so their device is not
// checked (Python passes placeholders for absent optional tensors).
#include <optional>
#include <type_traits>

#include "core/error.h"
#include "core/tensor.h"

namespace pynn {
namespace detail {

template <Device D>
void check_entry_tensor(const TensorView& t, const char* fn, int pos, int& gpu) {
  if (t.numel() == 0) return;
  PYNN_CHECK(t.device == D, fn, ": tensor argument ", pos, " is on ", device_name(t.device),
             ", but this entry point runs on ", device_name(D));
  if (D != Device::CUDA) return;
  if (gpu < 0) gpu = t.device_index;
  PYNN_CHECK(t.device_index == gpu, fn, ": tensor argument ", pos, " is on cuda:",
             t.device_index, " but an earlier one is on cuda:", gpu);
}

template <Device D, class A>
void check_entry_arg(const A& a, const char* fn, int pos, int& gpu) {
  using V = std::decay_t<A>;
  if constexpr (std::is_same_v<V, TensorView>) {
    check_entry_tensor<D>(a, fn, pos, gpu);
  } else if constexpr (std::is_same_v<V, std::optional<TensorView>>) {
    if (a) check_entry_tensor<D>(*a, fn, pos, gpu);
  }
}

}  // namespace detail

template <Device D, class R, class... Args>
auto on_device(const char* name, R (*fn)(Args...)) {
  return [name, fn](Args... args) -> R {
    [[maybe_unused]] int pos = 0, gpu = -1;  // unused when fn takes no arguments
    (detail::check_entry_arg<D>(args, name, ++pos, gpu), ...);
    return fn(args...);
  };
}

}  // namespace pynn
