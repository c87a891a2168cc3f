#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace pynn {

// Each maps to the Python exception of the same name (see bindings.cpp).
struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct TypeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct RuntimeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

}  // namespace pynn

// PYNN_CHECK(cond, "op: weight must be 2-D, got ", w.dim) throws pynn::ValueError.
#define PYNN_CHECK(cond, ...)                                                 \
  do {                                                                        \
    if (!(cond)) throw ::pynn::ValueError(::pynn::detail::concat(__VA_ARGS__)); \
  } while (0)

#define PYNN_CHECK_TYPE(cond, ...)                                           \
  do {                                                                       \
    if (!(cond)) throw ::pynn::TypeError(::pynn::detail::concat(__VA_ARGS__)); \
  } while (0)
