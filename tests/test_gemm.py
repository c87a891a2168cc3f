"""Our GEMM against a float64 reference over odd sizes, strides, transposes and every CPU kernel.

The CPU GEMM has three micro-kernels (AVX-512, AVX2+FMA, portable C++) picked from the CPU's
features; PYNN_GEMM_KERNEL forces one, read on every call, so each test below runs every kernel
this CPU can execute. Sizes sit on and around the register tiles and cache blocks of all of them
(csrc/cpu/gemm.cpp): MR in {4, 6, 8}, NR in {4, 8, 16, 32}, KC in {192, 256, 384}, NC = 256,
MC in {510, 512, 1020, 1024}.
"""
import pytest
import torch

from pynn import _backend as B

KERNELS = ["avx512", "avx2", "generic"]


def matmul(a, b, c, alpha=1.0, beta=0.0):
    B.launch("matmul", a, B.view(a), B.view(b), B.view(c), alpha, beta)
    return c


def _probe(kernel):
    """True when this CPU runs `kernel`; pynn raises RuntimeError naming it otherwise."""
    import os

    old = os.environ.get("PYNN_GEMM_KERNEL")
    os.environ["PYNN_GEMM_KERNEL"] = kernel
    try:
        matmul(torch.ones(1, 1), torch.ones(1, 1), torch.empty(1, 1))
        return True
    except RuntimeError as e:
        assert "cannot run" in str(e)
        return False
    finally:
        if old is None:
            del os.environ["PYNN_GEMM_KERNEL"]
        else:
            os.environ["PYNN_GEMM_KERNEL"] = old


@pytest.fixture(params=KERNELS)
def kernel(request, monkeypatch):
    """CPU kernel to force. A kernel is skipped only where the CPU lacks the instructions (on an
    x86-64 machine with AVX-512 all three run), and the generic one always runs."""
    if request.param != "generic" and not _probe(request.param):
        pytest.skip(f"this CPU cannot run the {request.param} kernel")
    monkeypatch.setenv("PYNN_GEMM_KERNEL", request.param)
    return request.param


@pytest.fixture
def threads():
    """Runs the body with torch's (and so pynn's) thread count set, restoring it afterwards."""
    old = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(old)


def _operand(rows, cols, layout, dtype, device):
    """A rows x cols matrix stored row-major ("N"), transposed ("T") or with no unit stride ("S")."""
    if layout == "T":
        return torch.randn(cols, rows, dtype=dtype, device=device).t()
    if layout == "S":
        return torch.randn(2 * rows, 3 * cols, dtype=dtype, device=device)[::2, ::3]
    return torch.randn(rows, cols, dtype=dtype, device=device)


def _check(m, n, k, la, lb, dtype, device, alpha=0.5, beta=2.0, c_pad=0):
    a = _operand(m, k, la, dtype, device)
    b = _operand(k, n, lb, dtype, device)
    cbig = torch.randn(m, n + c_pad, dtype=dtype, device=device)
    c = cbig[:, :n]
    c0 = c.clone()
    pad = cbig[:, n:].clone()
    ref = alpha * (a.double() @ b.double()) + beta * c0.double()
    out = matmul(a, b, c, alpha, beta)
    # float32: a sum of k rounded products, each term's error ~ eps * |a||b|; scale with sqrt(k).
    tol = 2e-5 * max(k, 1) ** 0.5 if dtype == torch.float32 else 1e-12 * max(k, 1) ** 0.5
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
    if c_pad:
        assert torch.equal(cbig[:, n:], pad), "wrote past the last column"


# (m, n, k): register-tile edges MR-1..MR+1 and NR-1..NR+1, K-slice edges KC-1..KC+1 and more
# than one slice (C accumulated across slices, beta applied once), an NC+1 and an MC+1 edge.
SIZES = [
    (1, 1, 1), (1, 33, 5), (3, 3, 191), (5, 7, 192), (7, 9, 193), (8, 16, 255), (9, 15, 257),
    (6, 17, 383), (4, 31, 385), (13, 32, 2), (17, 33, 769), (25, 65, 64), (2, 257, 31),
    (9, 513, 40),
]


@pytest.mark.parametrize("m,n,k", SIZES, ids=str)
@pytest.mark.parametrize("la,lb", [("N", "N"), ("T", "N"), ("N", "T"), ("T", "T")])
def test_gemm_matches_float64_reference(m, n, k, la, lb, kernel, dtype):
    _check(m, n, k, la, lb, dtype, "cpu")


@pytest.mark.parametrize("la,lb", [("S", "N"), ("N", "S"), ("S", "S"), ("S", "T")])
def test_gemm_any_strides(la, lb, kernel, dtype):
    _check(11, 37, 70, la, lb, dtype, "cpu", c_pad=5)


# Large enough that the pool splits C: along N (m < n), along M (m > n), and 3 threads (a grid
# that is not a power of two); an M edge past MC (1024 + 1 rows on the AVX-512 float plan).
@pytest.mark.parametrize("m,n,k,nthreads", [(40, 700, 300, 2), (700, 40, 300, 2),
                                            (301, 299, 200, 3), (1025, 24, 64, 2)], ids=str)
def test_gemm_threaded_split(m, n, k, nthreads, kernel, dtype, threads):
    threads(nthreads)
    _check(m, n, k, "N", "T", dtype, "cpu")
    _check(m, n, k, "T", "N", dtype, "cpu")


def test_gemm_matches_reference_on_device(device, dtype):
    _check(33, 47, 300, "N", "T", dtype, device)
    _check(33, 47, 300, "T", "N", dtype, device)


def test_gemm_beta_zero_ignores_nan_in_output(kernel, device):
    # Edges in M, N and K so the full-tile, the N-edge and the multi-slice paths all store.
    a, b = torch.randn(9, 300, device=device), torch.randn(300, 35, device=device)
    c = torch.full((9, 35), float("nan"), device=device)
    torch.testing.assert_close(matmul(a, b, c), a @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("alpha,beta", [(0.0, 0.0), (0.0, 3.0), (1.0, 1.0), (-2.0, 0.0)])
def test_gemm_alpha_beta(alpha, beta, kernel, dtype):
    _check(10, 20, 30, "N", "N", dtype, "cpu", alpha=alpha, beta=beta)


def test_gemm_alpha_zero_never_reads_a_or_b():
    # BLAS semantics: alpha == 0 only scales C, so NaN in A or B must not leak into C.
    a = torch.full((4, 5), float("nan"))
    b = torch.full((5, 6), float("nan"))
    c = torch.ones(4, 6)
    torch.testing.assert_close(matmul(a, b, c, 0.0, 3.0), torch.full((4, 6), 3.0))


@pytest.mark.parametrize("m,n,k", [(0, 4, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)], ids=str)
def test_gemm_empty(m, n, k, dtype):
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    c = torch.full((m, n), float("nan"), dtype=dtype)
    out = matmul(a, b, c, 1.0, 0.0)
    assert torch.equal(out, torch.zeros(m, n, dtype=dtype))  # k == 0: C = beta * C, never read


def test_gemm_strided_slices_and_row_stride(device):
    big = torch.randn(40, 50, dtype=torch.float64, device=device)
    a = big[1:30:2, 3:40:3]          # both strides > 1
    b = torch.randn(13, 9, dtype=torch.float64, device=device)
    cbig = torch.zeros(15, 20, dtype=torch.float64, device=device)
    c = cbig[:, 2:11]                # row stride 20
    matmul(a, b, c)
    torch.testing.assert_close(c, a @ b)
    assert (cbig[:, :2] == 0).all() and (cbig[:, 11:] == 0).all()


def test_gemm_kernel_env_rejects_unknown_value(monkeypatch):
    monkeypatch.setenv("PYNN_GEMM_KERNEL", "sse9")
    with pytest.raises(ValueError, match="PYNN_GEMM_KERNEL"):
        matmul(torch.ones(2, 2), torch.ones(2, 2), torch.empty(2, 2))


@pytest.mark.parametrize("bad,match", [
    (lambda d: (torch.randn(3, 4, device=d), torch.randn(5, 2, device=d), torch.empty(3, 2, device=d)), "cannot be multiplied"),
    (lambda d: (torch.randn(3, 4, device=d), torch.randn(4, 2, device=d), torch.empty(3, 3, device=d)), "c has shape"),
    (lambda d: (torch.randn(3, 4, device=d), torch.randn(4, 2, dtype=torch.float64, device=d), torch.empty(3, 2, device=d)), "same dtype"),
    (lambda d: (torch.randn(3, 4, 1, device=d), torch.randn(4, 2, device=d), torch.empty(3, 2, device=d)), "must be 2-D"),
    (lambda d: (torch.randn(3, 4, device=d), torch.randn(4, 2, device=d), torch.empty(2, 3, device=d).t()), "unit column stride"),
])
def test_gemm_bad_args_raise(bad, match, device):
    a, b, c = bad(device)
    with pytest.raises((ValueError, TypeError), match=match):
        matmul(a, b, c)
