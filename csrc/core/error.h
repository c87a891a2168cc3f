#pragma once
#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
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
// Message pieces are appended to a std::string directly rather than through an ostringstream:
// no iostream or locale state is touched, so building an error message cannot itself fail in a
// process whose C++ runtime is set up differently from ours (seen on an H200 image, where the
// first ostream insertion inside the module segfaulted).
inline void append(std::string& s, std::string_view v) { s.append(v.data(), v.size()); }
inline void append(std::string& s, const char* v) { s.append(v ? v : "(null)"); }
inline void append(std::string& s, char c) { s.push_back(c); }
inline void append(std::string& s, bool b) { s.append(b ? "true" : "false"); }
template <class T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
void append(std::string& s, T v) {
  s.append(std::to_string(v));
}
template <class T, std::enable_if_t<std::is_floating_point_v<T>, int> = 0>
void append(std::string& s, T v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));  // ostream's default format
  s.append(buf);
}

template <class... Args>
std::string concat(const Args&... args) {
  std::string s;
  (append(s, args), ...);
  return s;
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
