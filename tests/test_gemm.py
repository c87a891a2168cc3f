"""Our GEMM against a float64 reference over odd sizes, strides and transposes."""
import pytest
import torch

from pynn import _backend as B


def matmul(a, b, c, alpha=1.0, beta=0.0):
    B.launch("matmul", a, B.view(a), B.view(b), B.view(c), alpha, beta)
    return c


SIZES = [(1, 1, 1), (1, 17, 5), (7, 1, 3), (13, 29, 31), (32, 257, 300), (127, 65, 513), (5, 3, 0)]


@pytest.mark.parametrize("m,n,k", SIZES, ids=str)
@pytest.mark.parametrize("ta", [False, True], ids=["A", "At"])
@pytest.mark.parametrize("tb", [False, True], ids=["B", "Bt"])
def test_gemm_matches_float64_reference(m, n, k, ta, tb, device, dtype):
    a = torch.randn(k, m, dtype=dtype, device=device).t() if ta else torch.randn(m, k, dtype=dtype, device=device)
    b = torch.randn(n, k, dtype=dtype, device=device).t() if tb else torch.randn(k, n, dtype=dtype, device=device)
    c0 = torch.randn(m, n, dtype=dtype, device=device)
    ref = 0.5 * (a.double() @ b.double()) + 2.0 * c0.double()
    out = matmul(a, b, c0.clone(), 0.5, 2.0)
    tol = 1e-4 * max(k, 1) ** 0.5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)


def test_gemm_beta_zero_ignores_nan_in_output(device):
    a, b = torch.randn(9, 11, device=device), torch.randn(11, 6, device=device)
    c = torch.full((9, 6), float("nan"), device=device)
    torch.testing.assert_close(matmul(a, b, c), a @ b, rtol=1e-5, atol=1e-5)


def test_gemm_strided_slices_and_row_stride(device):
    big = torch.randn(40, 50, dtype=torch.float64, device=device)
    a = big[1:30:2, 3:40:3]          # both strides > 1
    b = torch.randn(13, 9, dtype=torch.float64, device=device)
    cbig = torch.zeros(15, 20, dtype=torch.float64, device=device)
    c = cbig[:, 2:11]                # row stride 20
    matmul(a, b, c)
    torch.testing.assert_close(c, a @ b)
    assert (cbig[:, :2] == 0).all() and (cbig[:, 11:] == 0).all()


@pytest.mark.parametrize("bad,match", [
    (lambda d: (torch.randn(3, 4, device=d), torch.randn(5, 2, device=d), torch.empty(3, 2, device=d)), "cannot be multiplied"),
    (lambda d: (torch.randn(3, 4, device=d), torch.randn(4, 2, device=d), torch.empty(3, 3, device=d)), "c has shape"),
    (lambda d: (torch.randn(3, 4, device=d), torch.randn(4, 2, dtype=torch.float64, device=d), torch.empty(3, 2, device=d)), "same dtype"),
    (lambda d: (torch.randn(3, 4, 1, device=d), torch.randn(4, 2, device=d), torch.empty(3, 2, device=d)), "must be 2-D"),
])
def test_gemm_bad_args_raise(bad, match, device):
    a, b, c = bad(device)
    with pytest.raises((ValueError, TypeError), match=match):
        matmul(a, b, c)
