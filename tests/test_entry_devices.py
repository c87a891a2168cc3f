"""Every compiled entry point refuses tensors on the other kind of device (core/device_check.h).

The per-op checks only compare tensors with each other, so a call whose tensors are all on the
wrong kind of device used to get through and read device memory from the host (or the reverse).
These calls go straight to pynn._C, past the Python checks, as a caller of the core could.
"""
import pytest
import torch

from pynn import _backend as B
from pynn import _C


def _claim(t, device_type, index=0):
    """t's view, relabelled as living on another device (the kernel must not get to read it)."""
    v = B.view(t)
    return (v[0], v[1], v[2], v[3], device_type, index)


CPU, CUDA = 0, 1


def test_cpu_entry_refuses_cuda_tensors():
    x = torch.randn(5, 3)
    y = torch.empty_like(x)
    with pytest.raises(ValueError, match=r"activation_forward_cpu: tensor argument 1 is on cuda"):
        _C.activation_forward_cpu(_claim(x, CUDA), _claim(y, CUDA), 0, 0.0)
    with pytest.raises(ValueError, match=r"tensor argument 2 is on cuda"):
        _C.activation_forward_cpu(B.view(x), _claim(y, CUDA), 0, 0.0)


def test_optional_tensor_arguments_are_checked():
    x, w, b = torch.randn(4, 3), torch.randn(2, 3), torch.randn(2)
    out = torch.empty(4, 2)
    with pytest.raises(ValueError, match=r"linear_forward_cpu: tensor argument 3 is on cuda"):
        _C.linear_forward_cpu(B.view(x), B.view(w), _claim(b, CUDA), B.view(out))
    # an absent optional (None) is fine, and the call still computes
    _C.linear_forward_cpu(B.view(x), B.view(w), None, B.view(out))
    torch.testing.assert_close(out, x @ w.T)


def test_empty_placeholders_are_not_checked():
    # Python passes empty placeholders for absent tensors; they are never read.
    x = torch.randn(0, 3)
    y = torch.empty_like(x)
    _C.activation_forward_cpu(_claim(x, CUDA), _claim(y, CUDA), 0, 0.0)


@pytest.mark.skipif(not B.cuda_built(), reason="built without the CUDA kernels")
def test_cuda_entry_refuses_cpu_tensors():
    # No GPU needed: the wrapper raises before anything touches the CUDA runtime.
    x = torch.randn(5, 3)
    y = torch.empty_like(x)
    with pytest.raises(ValueError, match=r"activation_forward_cuda: tensor argument 1 is on cpu"):
        _C.activation_forward_cuda(B.view(x), B.view(y), 0, 0.0, 0)
    with pytest.raises(ValueError, match=r"softmax_forward_cuda: tensor argument 2 is on cpu"):
        _C.softmax_forward_cuda(_claim(x, CUDA), B.view(y), 1, False, 0)
    with pytest.raises(ValueError, match=r"tensor argument 2 is on cuda:1 but an earlier one is on cuda:0"):
        _C.softmax_forward_cuda(_claim(x, CUDA, 0), _claim(y, CUDA, 1), 1, False, 0)
