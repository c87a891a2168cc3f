#include <string>

#include "core/cuda_api.h"
#include "core/cuda_utils.cuh"

namespace pynn {
namespace cuda {

int device_count() {
  int n = 0;
  // No driver or no device is an answer, not an error: report 0 and clear the error state.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string runtime_info() {
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  if (cudaDriverGetVersion(&driver) != cudaSuccess) cudaGetLastError();
  return detail::concat("runtime ", runtime / 1000, ".", (runtime % 1000) / 10, ", driver ",
                        driver ? std::to_string(driver / 1000) + "." +
                                     std::to_string((driver % 1000) / 10)
                               : std::string("none"));
}

}  // namespace cuda
}  // namespace pynn
