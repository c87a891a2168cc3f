"""Shared test rig: every test that takes `device` runs on cpu, and on cuda where a GPU is."""
import pytest
import torch

import pynn
from pynn.bench.machine import tf32

CUDA = pynn.cuda_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA GPU"))]
DTYPES = [torch.float32, torch.float64]

# DESIGN.md tolerances; reductions scale atol by the magnitude they sum over.
TOLERANCES = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(params=DTYPES, ids=["f32", "f64"])
def dtype(request):
    return request.param


@pytest.fixture
def cpu_threads():
    """Sets torch's (and so pynn's) thread count for one test; restores it afterwards."""
    old = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(old)


def assert_close(actual, expected, dtype=None, scale=1.0, **kw):
    dtype = dtype or expected.dtype
    tol = dict(TOLERANCES[dtype])
    tol["atol"] *= scale
    tol.update(kw)
    torch.testing.assert_close(actual, expected, **tol)


@pytest.fixture(scope="session", autouse=True)
def _ieee_float32_references():
    """torch's cuDNN convolutions default to TF32 (about 1e-3 relative error), which would make
    torch's float32 results on cuda a worse reference than our IEEE kernels; pin them to IEEE."""
    with tf32(False):
        yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
