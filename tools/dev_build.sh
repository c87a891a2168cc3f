#!/usr/bin/env bash
# Fast in-place build for development: compiles src/pynn/_C*.so next to the sources so that
# `PYTHONPATH=src python -m pytest` tests the source tree. PYNN_CUDA=0 skips the CUDA kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${PYNN_BUILD_DIR:-build/dev}
ARGS=(-G Ninja -DCMAKE_BUILD_TYPE=${PYNN_BUILD_TYPE:-Release}
      -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PWD/src/pynn"
      -DPython_EXECUTABLE="$(command -v python)"
      -Dpybind11_DIR="$(python -c 'import pybind11; print(pybind11.get_cmake_dir())')")
if [[ -n "${PYNN_CUDA:-}" ]]; then
  if [[ "$PYNN_CUDA" == 0 ]]; then ARGS+=(-DPYNN_CUDA=OFF); else ARGS+=(-DPYNN_CUDA=ON); fi
fi
[[ "${PYNN_OPENMP:-}" == 0 ]] && ARGS+=(-DPYNN_OPENMP=OFF)
cmake -S . -B "$BUILD_DIR" "${ARGS[@]}" >/dev/null
cmake --build "$BUILD_DIR"
