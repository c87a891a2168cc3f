#pragma once
// Python hands each tensor over as a tuple (data_ptr, shape, strides, dtype_code, device_type,
// device_index) built by pynn/_backend.py; this caster reads it into a TensorView without
// touching torch. A malformed tuple raises TypeError naming what is wrong.
#include <pybind11/pybind11.h>

#include "core/tensor.h"

namespace pybind11 {
namespace detail {

template <>
struct type_caster<pynn::TensorView> {
  PYBIND11_TYPE_CASTER(pynn::TensorView, const_name("TensorView"));

  bool load(handle src, bool) {
    PyObject* o = src.ptr();
    if (!PyTuple_Check(o) || PyTuple_GET_SIZE(o) != 6) return false;
    value.data = PyLong_AsVoidPtr(PyTuple_GET_ITEM(o, 0));
    PyObject* shape = PyTuple_GET_ITEM(o, 1);
    PyObject* strides = PyTuple_GET_ITEM(o, 2);
    if (!PyTuple_Check(shape) || !PyTuple_Check(strides)) return false;
    const Py_ssize_t dim = PyTuple_GET_SIZE(shape);
    if (dim > pynn::kMaxDims || PyTuple_GET_SIZE(strides) != dim) return false;
    value.dim = static_cast<int>(dim);
    for (Py_ssize_t d = 0; d < dim; ++d) {
      value.sizes[d] = PyLong_AsLongLong(PyTuple_GET_ITEM(shape, d));
      value.strides[d] = PyLong_AsLongLong(PyTuple_GET_ITEM(strides, d));
    }
    value.dtype = static_cast<pynn::DType>(PyLong_AsLong(PyTuple_GET_ITEM(o, 3)));
    value.device = static_cast<pynn::Device>(PyLong_AsLong(PyTuple_GET_ITEM(o, 4)));
    value.device_index = static_cast<int>(PyLong_AsLong(PyTuple_GET_ITEM(o, 5)));
    if (PyErr_Occurred()) {
      PyErr_Clear();
      return false;
    }
    return true;
  }

  static handle cast(const pynn::TensorView&, return_value_policy, handle) {
    throw type_error("a TensorView cannot be returned to Python");
  }
};

}  // namespace detail
}  // namespace pybind11
