"""Builds pynn._C with CMake.

Environment:
  PYNN_CUDA=0|1              force the CUDA kernels off / on (on fails without nvcc);
                             unset: built whenever CMake finds a CUDA compiler.
  CMAKE_CUDA_ARCHITECTURES   GPU targets, e.g. "90" or "80;90" (default "90": SASS + PTX for sm_90).
  PYNN_OPENMP=0              CPU parallel regions on pynn's own thread pool instead of OpenMP
                             (default: OpenMP, sharing torch's runtime, where the compiler has it).
  PYNN_BUILD_TYPE            CMake build type (default Release).
  PYNN_BUILD_DIR             where CMake builds (default build/temp.*); reused between builds.
  MAX_JOBS                   parallel compile jobs.
"""
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(os.environ.get("PYNN_BUILD_DIR", self.build_temp)).resolve()
        build_dir.mkdir(parents=True, exist_ok=True)
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('PYNN_BUILD_TYPE', 'Release')}",
            "-G", "Ninja",
        ]
        cuda = os.environ.get("PYNN_CUDA")
        if cuda is not None:
            args.append(f"-DPYNN_CUDA={'ON' if cuda.strip() not in ('0', 'OFF', 'off', '') else 'OFF'}")
        if os.environ.get("PYNN_OPENMP", "").strip() in ("0", "OFF", "off"):
            args.append("-DPYNN_OPENMP=OFF")
        if os.environ.get("CMAKE_CUDA_ARCHITECTURES"):
            args.append(f"-DCMAKE_CUDA_ARCHITECTURES={os.environ['CMAKE_CUDA_ARCHITECTURES']}")
        subprocess.check_call(["cmake", "-S", str(ROOT), "-B", str(build_dir), *args])
        build = ["cmake", "--build", str(build_dir)]
        if os.environ.get("MAX_JOBS"):
            build += ["-j", os.environ["MAX_JOBS"]]
        subprocess.check_call(build)


setup(ext_modules=[CMakeExtension("pynn._C")], cmdclass={"build_ext": CMakeBuild})
