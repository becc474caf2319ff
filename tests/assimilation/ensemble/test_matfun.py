"""Batched SPD matrix functions: Newton–Schulz A^{-1/2} against eigh, fallback, batching, dtypes."""

from __future__ import annotations

import math

import pytest
import torch

from hybrida.assimilation.ensemble.matfun import (
    inv_sqrt_eigh,
    inv_sqrt_newton_schulz,
    newton_schulz_matmuls,
    prefer_newton_schulz,
    spd_inverse,
    spectral_upper_bound,
)

F64 = torch.float64


def _spd(batch: int, N: int, cond: float, seed: int = 0, dtype=F64) -> torch.Tensor:
    """Random SPD matrices Q diag(λ) Qᵀ with λ log-spaced in [1, cond]."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(batch, N, N, generator=g, dtype=F64))
    lam = torch.logspace(0, math.log10(cond), N, dtype=F64) * (
        0.5 + torch.rand(batch, 1, generator=g, dtype=F64)
    )
    return ((Q * lam.unsqueeze(-2)) @ Q.mT).to(dtype)


def _exact_inv_sqrt(A: torch.Tensor) -> torch.Tensor:
    lam, V = torch.linalg.eigh(A.double())
    return (V * lam.rsqrt().unsqueeze(-2)) @ V.mT


@pytest.mark.parametrize("N", [1, 3, 10, 20])
@pytest.mark.parametrize("cond", [1.0, 1.5, 30.0, 1e4])
def test_newton_schulz_matches_eigh_float64(N, cond):
    A = _spd(64, N, cond, seed=N)
    res = inv_sqrt_newton_schulz(A)
    assert res.n_fallback == 0
    ref = _exact_inv_sqrt(A)
    scale = ref.abs().amax(dim=(-2, -1), keepdim=True)
    assert ((res.inv_sqrt - ref).abs() / scale).max() < 1e-10
    # and Z A Z = I
    ZAZ = res.inv_sqrt @ A @ res.inv_sqrt
    assert torch.allclose(ZAZ, torch.eye(N, dtype=F64).expand_as(ZAZ), atol=1e-10 * cond)


def test_lower_bound_hint_speeds_up_without_changing_result():
    A = _spd(50, 10, 3.0, seed=1) + torch.eye(10, dtype=F64)  # I + SPD: λ >= 1
    plain = inv_sqrt_newton_schulz(A)
    hinted = inv_sqrt_newton_schulz(A, lower=1.0)
    assert hinted.iterations <= plain.iterations
    assert torch.allclose(hinted.inv_sqrt, plain.inv_sqrt, atol=1e-12, rtol=0)
    assert torch.allclose(hinted.inv_sqrt, _exact_inv_sqrt(A), atol=1e-12, rtol=0)


def test_float32_tolerance_and_dtype():
    A = _spd(100, 20, 50.0, seed=2, dtype=torch.float32)
    res = inv_sqrt_newton_schulz(A)
    assert res.inv_sqrt.dtype == torch.float32 and res.n_fallback == 0
    ref = _exact_inv_sqrt(A)
    assert ((res.inv_sqrt.double() - ref).abs().max() / ref.abs().max()) < 1e-5


def test_batching_leading_dims_and_workspace():
    A = _spd(12, 6, 20.0, seed=3).reshape(3, 4, 6, 6)
    ws: dict = {}
    out = inv_sqrt_newton_schulz(A, workspace=ws).inv_sqrt.clone()
    assert out.shape == A.shape
    for i in range(3):
        for j in range(4):
            # the step sequence follows the batch's worst residual: equal to within tol
            single = inv_sqrt_newton_schulz(A[i, j]).inv_sqrt
            assert torch.allclose(out[i, j], single, atol=1e-11, rtol=0)
    ptrs = {k: v.data_ptr() for k, v in ws.items()}
    again = inv_sqrt_newton_schulz(A, workspace=ws).inv_sqrt
    assert torch.equal(again, out) and ptrs == {k: v.data_ptr() for k, v in ws.items()}


def test_fallback_to_eigh_for_ill_conditioned_and_max_iter():
    good = _spd(5, 8, 2.0, seed=4)
    bad = _spd(2, 8, 1e14, seed=5)
    A = torch.cat([good, bad])
    res = inv_sqrt_newton_schulz(A, max_iter=8)
    assert res.n_fallback == 2  # only the two ill-conditioned matrices
    assert torch.allclose(res.inv_sqrt, inv_sqrt_eigh(A), atol=1e-9, rtol=1e-9)
    # non-finite input is never reported as converged: it reaches eigh, which raises
    A2 = good.clone()
    A2[0, 0, 0] = float("nan")
    with pytest.raises(torch.linalg.LinAlgError):
        inv_sqrt_newton_schulz(A2)


def test_spd_inverse_and_spectral_bound():
    A = _spd(20, 7, 100.0, seed=6)
    assert torch.allclose(spd_inverse(A), torch.linalg.inv(A), atol=1e-10, rtol=1e-10)
    lam_max = torch.linalg.eigvalsh(A)[..., -1]
    ub = spectral_upper_bound(A)
    assert bool((ub >= lam_max * (1 - 1e-14)).all())
    assert bool((ub <= A.diagonal(dim1=-2, dim2=-1).sum(-1) * (1 + 1e-14)).all())


def test_upper_bound_uses_the_frobenius_norm_above_the_lower_bound():
    # I + G, G = Q diag(1, 1, 1, 0, ...) Qᵀ: λ_max = 2, trace bound 4, Frobenius bound 1 + √3
    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(8, 10, 10, generator=g, dtype=F64))
    lam = torch.tensor([1.0, 1.0, 1.0] + [0.0] * 7, dtype=F64)
    A = torch.eye(10, dtype=F64) + (Q * lam) @ Q.mT
    ub = spectral_upper_bound(A, lower=1.0)
    gersh = A.abs().sum(-1).amax(-1)
    expected = torch.clamp(gersh, max=1.0 + math.sqrt(3.0))  # the trace bound (4) is never the least
    assert torch.allclose(ub, expected, rtol=1e-12, atol=0)
    assert int((gersh > ub + 0.05).sum()) >= 6  # the Frobenius bound is the tightest for most of them
    assert bool((ub >= 2.0).all())
    assert spectral_upper_bound(A, lower=0.0).ge(2.0).all()  # still a bound with the default lower


def test_matmul_count_prediction_and_solver_rule():
    counts = [newton_schulz_matmuls(k, 1e-12) for k in (1.0, 1.5, 3.0, 30.0, 1e4)]
    assert counts[0] == 0 and counts == sorted(counts)
    # the prediction is the count actually spent on a matrix with exactly that spectrum
    N, kappa = 6, 3.0
    A = torch.diag(torch.linspace(1.0, kappa, N, dtype=F64)).expand(4, N, N).contiguous()
    calls = {"n": 0}
    bmm = torch.bmm

    def counting(*args, **kw):
        calls["n"] += 1
        return bmm(*args, **kw)

    torch.bmm = counting
    try:
        inv_sqrt_newton_schulz(A, lower=1.0, upper=torch.full((4,), kappa, dtype=F64))
    finally:
        torch.bmm = bmm
    assert calls["n"] == newton_schulz_matmuls(kappa, 1e-12)
    assert prefer_newton_schulz(10, 2.0, 1e-12)
    assert not prefer_newton_schulz(10, 1e8, 1e-12)
    assert not prefer_newton_schulz(10, math.inf, 1e-12)
    assert prefer_newton_schulz(10, 2.0, 1e-12, batch=4000)
    assert not prefer_newton_schulz(10, 2.0, 1e-12, batch=8)  # overhead not amortised
