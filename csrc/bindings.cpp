// Registration only: every kernel entry point of csrc/ops/*.h becomes pynn._C.<name>. Kernels run
// without the GIL; C++ exceptions become the Python exception of the same name.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "core/cuda_api.h"
#include "core/device_check.h"
#include "core/parallel.h"
#include "core/pybind_view.h"
#include "ops/activation.h"
#include "ops/dropout.h"
#include "ops/linear.h"
#include "ops/conv.h"
#include "ops/gemm.h"
#include "ops/loss.h"
#include "ops/softmax.h"
#include "ops/rnn.h"
#include "ops/lrn.h"
#include "ops/batchnorm.h"
#include "ops/pool.h"

namespace py = pybind11;

// Registers NAME_cpu, and NAME_cuda when the CUDA kernels are built; each refuses tensors on
// the other kind of device (core/device_check.h).
#define PYNN_DEF_CPU(m, name)                                                              \
  m.def(#name "_cpu", pynn::on_device<pynn::Device::CPU>(#name "_cpu", &pynn::name##_cpu), \
        py::call_guard<py::gil_scoped_release>())
#ifdef PYNN_WITH_CUDA
#define PYNN_DEF(m, name)                                                                     \
  PYNN_DEF_CPU(m, name);                                                                      \
  m.def(#name "_cuda", pynn::on_device<pynn::Device::CUDA>(#name "_cuda", &pynn::name##_cuda), \
        py::call_guard<py::gil_scoped_release>())
#else
#define PYNN_DEF(m, name) PYNN_DEF_CPU(m, name)
#endif

#ifndef PYNN_CUDA_ARCHS
#define PYNN_CUDA_ARCHS ""
#endif
#ifndef PYNN_CUDA_COMPILER
#define PYNN_CUDA_COMPILER ""
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "pynn compiled kernels (torch-free core)";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const pynn::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const pynn::RuntimeError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });

  // ---- build and runtime information ----
#ifdef PYNN_WITH_CUDA
  m.attr("cuda_built") = true;
  m.def("cuda_device_count", &pynn::cuda::device_count);
  m.def("cuda_runtime_info", &pynn::cuda::runtime_info);
#else
  m.attr("cuda_built") = false;
  m.def("cuda_device_count", [] { return 0; });
  m.def("cuda_runtime_info", [] { return std::string("not built"); });
#endif
  m.attr("cuda_architectures") = PYNN_CUDA_ARCHS;
  m.attr("cuda_compiler") = PYNN_CUDA_COMPILER;
  m.attr("cxx_compiler") = PYNN_CXX_COMPILER;
  m.def("get_num_threads", &pynn::get_num_threads);
  m.def("set_num_threads", &pynn::set_num_threads);
  m.def("core_round_trip_ns", &pynn::core_round_trip_ns, py::arg("max_round_trips") = 100000,
        py::call_guard<py::gil_scoped_release>());

  // ---- kernels ----
  PYNN_DEF(m, matmul);
  PYNN_DEF(m, activation_forward);
  PYNN_DEF(m, activation_backward);
  PYNN_DEF(m, linear_forward);
  PYNN_DEF(m, linear_backward);
  PYNN_DEF(m, dropout_forward);
  PYNN_DEF(m, dropout_backward);
  m.def("philox4x32_10", &pynn::philox4x32_10_host, py::arg("counter"), py::arg("key"));
  // softmax / losses
  PYNN_DEF(m, softmax_forward);
  PYNN_DEF(m, softmax_backward);
  PYNN_DEF(m, mse_loss_forward);
  PYNN_DEF(m, mse_loss_backward);
  PYNN_DEF(m, cross_entropy_forward);
  PYNN_DEF(m, cross_entropy_backward);
  // conv2d
  PYNN_DEF(m, conv2d_forward);
  PYNN_DEF(m, conv2d_backward_input);
  PYNN_DEF(m, conv2d_backward_weight);
  PYNN_DEF(m, conv2d_backward_bias);
  // which CPU input-gradient path runs, so that Python sizes its workspace for that path
  m.def("conv2d_input_grad_is_conv", &pynn::conv2d_input_grad_is_conv);
  m.def("conv2d_direct_cpu", &pynn::conv2d_direct_cpu);
  PYNN_DEF_CPU(m, conv2d_math_selfcheck);

  // recurrent layers (csrc/ops/rnn.h)
  PYNN_DEF(m, lstm_forward);
  PYNN_DEF(m, lstm_backward);
  PYNN_DEF(m, rnn_forward);
  PYNN_DEF(m, rnn_backward);
  PYNN_DEF(m, rnn_dropout);
  PYNN_DEF(m, lrn_forward);
  PYNN_DEF(m, lrn_backward);
  PYNN_DEF(m, batch_norm_forward);
  PYNN_DEF(m, batch_norm_backward);

  // pooling (csrc/cpu/pool.cpp, csrc/cuda/pool.cu)
  m.def("pool_output_size", &pynn::pool_output_size_host);
  PYNN_DEF(m, max_pool2d_forward);
  PYNN_DEF(m, max_pool2d_backward);
  PYNN_DEF(m, avg_pool2d_forward);
  PYNN_DEF(m, avg_pool2d_backward);
  PYNN_DEF(m, adaptive_avg_pool2d_forward);
  PYNN_DEF(m, adaptive_avg_pool2d_backward);
}
