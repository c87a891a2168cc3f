#pragma once
// What the host side asks of the CUDA build, callable without including CUDA headers.
#include <string>

namespace pynn {
namespace cuda {
// Number of usable GPUs; 0 when no driver or device is present (never throws).
int device_count();
std::string runtime_info();
}  // namespace cuda
}  // namespace pynn
