"""Two-layer QG model: pyqg-jax agreement, linear waves, inversion, TL/adjoint, batching, errors."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from hybrida.models.linearize import tangent_linear, tangent_linear_and_adjoint
from hybrida.models.qg import QGModel

#: pyqg defaults, and a case with lower-layer flow, no drag and a non-square domain
CASES = {
    "pyqg_defaults": {"nx": 32},
    "sheared_nodrag_rect": {
        "nx": 32, "ny": 16, "W": 5e5, "U1": 0.03, "U2": -0.01, "rek": 0.0, "beta": 1e-11,
        "rd": 20000.0, "delta": 0.5,
    },
}


def _field(m: QGModel, seed: int, shape=(), scale: float = 1e-5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, m.n, generator=g, dtype=torch.float64)


def _rel(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max() / torch.as_tensor(b).abs().max())


@pytest.fixture(scope="module")
def pyqg_jax():
    pj = pytest.importorskip(
        "pyqg_jax", reason="pyqg-jax (the reference implementation) is not installed: pip install pyqg-jax"
    )
    import jax

    jax.config.update("jax_enable_x64", True)
    return pj


def _reference(pj, m: QGModel, x: torch.Tensor):
    import jax
    import jax.numpy as jnp

    params = {k: getattr(m, k) for k in ("nx", "ny", "L", "W", "beta", "rd", "delta", "U1", "U2", "rek")}
    jm = pj.qg_model.QGModel(**params, filterfac=m.filterfac, precision=pj.state.Precision.DOUBLE)
    st = jm.create_initial_state(jax.random.key(0)).update(q=jnp.asarray(m.to_grid(x).numpy()))
    return jm, st


@pytest.mark.parametrize("case", sorted(CASES))
def test_tendency_and_inversion_equal_pyqg_jax(pyqg_jax, case):
    """dq̂/dt (advection by eddies + mean shear, β and shear PV gradient, bottom drag) and ψ̂ to 1e-10."""
    import numpy as np

    m = QGModel(**CASES[case])
    for seed in range(2):
        x = _field(m, seed)
        jm, st = _reference(pyqg_jax, m, x)
        full = jm.get_full_state(st)
        qh = m.spectral(x)
        assert _rel(m.spectral_tendency(qh), torch.from_numpy(np.array(full.dqhdt))) < 1e-10
        assert _rel(m.invert(qh), torch.from_numpy(np.array(full.ph))) < 1e-10
        assert _rel(m.tendency(x), torch.from_numpy(np.array(full.dqdt)).reshape(-1)) < 1e-10
        ke_ref = float(pyqg_jax.diagnostics.total_ke(full, jm.get_grid()))
        assert abs(float(m.kinetic_energy(x)) - ke_ref) <= 1e-10 * ke_ref


@pytest.mark.parametrize("case", sorted(CASES))
def test_filtered_euler_steps_equal_pyqg_jax(pyqg_jax, case):
    """Three forward-Euler steps with pyqg's exponential filter equal pyqg-jax's EulerStepper."""
    import numpy as np

    m = QGModel(**CASES[case], scheme="euler", dt=3600.0)
    x = _field(m, 7)
    jm, st = _reference(pyqg_jax, m, x)
    stepped = pyqg_jax.steppers.SteppedModel(jm, pyqg_jax.steppers.EulerStepper(dt=m.dt))
    s = stepped.initialize_stepper_state(st)
    for _ in range(3):
        s = stepped.step_model(s)
    ref = torch.from_numpy(np.array(s.state.q)).reshape(-1)
    assert _rel(m.forecast(x, 3), ref) < 1e-10
    # the filter matters at this resolution: without it the answer differs
    assert _rel(QGModel(**CASES[case], scheme="euler", dt=3600.0, filterfac=0.0).forecast(x, 3), ref) > 1e-6


def test_single_mode_is_a_linear_rossby_wave():
    """For one Fourier mode the Jacobian vanishes: dq̂/dt = -ik(U q̂ + Q_y ψ̂) + drag (pyqg eq.)."""
    m = QGModel(nx=16, U2=0.005)
    xg = (torch.arange(m.nx, dtype=torch.float64) + 0.5) * m.dx
    yg = (torch.arange(m.ny, dtype=torch.float64) + 0.5) * m.dy
    kx, ly = 2 * math.pi * 2 / m.L, 2 * math.pi * 1 / m.W
    phase = kx * xg[None, :] + ly * yg[:, None]
    x = torch.cat([1e-5 * torch.cos(phase).reshape(-1), -3e-6 * torch.cos(phase).reshape(-1)])
    qh = m.spectral(x)
    ph = m.invert(qh)
    k = m.k.to(torch.complex128)
    U = torch.tensor([m.U1, m.U2], dtype=torch.float64).reshape(2, 1, 1)
    Qy = torch.tensor(m.Qy, dtype=torch.float64).reshape(2, 1, 1)
    expect = -1j * k * (U * qh + Qy * ph)
    expect[1] += m.rek * m.wv2 * ph[1]
    got = m.spectral_tendency(qh)
    assert _rel(got, expect) < 1e-12


def test_inversion_solves_the_pv_definition():
    """q = ∇²ψ + F (ψ_other - ψ) recovered from ψ = invert(q) (mean removed)."""
    m = QGModel(nx=16, ny=8, W=4e5)
    x = _field(m, 3)
    qh = m.spectral(x)
    ph = m.invert(qh)
    lap = -m.wv2 * ph
    q1 = lap[0] + m.F1 * (ph[1] - ph[0])
    q2 = lap[1] + m.F2 * (ph[0] - ph[1])
    back = torch.stack((q1, q2))
    back[:, 0, 0] = qh[:, 0, 0]  # the mean PV does not enter ψ
    assert _rel(back, qh) < 1e-12


def test_rk4_converges_at_fourth_order_without_filter():
    m0 = QGModel(nx=16, filterfac=0.0, dt=4 * 86400.0)
    x = _field(m0, 11, scale=3e-6)
    T = 16 * 86400.0
    ref = QGModel(nx=16, filterfac=0.0, dt=T / 256).forecast(x, 256)
    errs = [
        (QGModel(nx=16, filterfac=0.0, dt=T / s).forecast(x, s) - ref).norm().item() for s in (8, 16, 32)
    ]
    ratios = [a / b for a, b in pairwise(errs)]
    assert all(12 < r < 20 for r in ratios), (errs, ratios)


def test_adjoint_dot_product_and_taylor():
    m = QGModel(nx=16)
    x = _field(m, 5)
    gen = torch.Generator().manual_seed(9)
    dx = 1e-6 * torch.randn(m.n, generator=gen, dtype=torch.float64)
    dy = torch.randn(m.n, generator=gen, dtype=torch.float64)
    lin = tangent_linear_and_adjoint(m, x, n_steps=3)
    lhs, rhs = torch.dot(lin.tl(dx), dy), torch.dot(dx, lin.adj(dy))
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), abs(rhs))
    torch.testing.assert_close(lin.value, m.forecast(x, 3), rtol=1e-14, atol=0)
    m0, tl = m.step(x), tangent_linear(m, x, dx)
    errs = [(m.step(x + e * dx) - m0 - e * tl).norm().item() for e in (1.0, 1e-1, 1e-2)]
    ratios = [a / b for a, b in pairwise(errs)]
    assert all(60 < r < 160 for r in ratios), (errs, ratios)


def test_batched_float32_and_layout():
    m = QGModel(nx=16)
    x = _field(m, 2, shape=(2, 3))
    out = m.step(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out[1, 2], m.step(x[1, 2]), rtol=1e-13, atol=1e-20)
    y32 = m.step(x.float())
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), out, rtol=1e-4, atol=1e-10)
    # layout: layer-major, then rows (y), then columns (x)
    assert m.to_grid(torch.arange(m.n))[1, 2, 3] == m.ny * m.nx + 2 * m.nx + 3
    traj = m.forecast(x[0, 0], 2, trajectory=True)
    torch.testing.assert_close(traj[-1], m.forecast(x[0, 0], 2), rtol=1e-13, atol=1e-20)


def test_bad_input_raises():
    m = QGModel(nx=16)
    with pytest.raises(ValueError, match="last dimension"):
        m.step(torch.zeros(m.n + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="float32 or float64"):
        m.step(torch.zeros(m.n, dtype=torch.int64))
    with pytest.raises(ValueError, match="nx must be an even integer"):
        QGModel(nx=15)
    with pytest.raises(ValueError, match="rd must be"):
        QGModel(rd=-1.0)
    with pytest.raises(ValueError, match="unknown scheme"):
        QGModel(scheme="ab3")


def test_baroclinic_instability_grows_small_eddies():
    """Small eddies on a strong mean shear (U1 = 0.1 m/s) grow by baroclinic instability: 90 days."""
    m = QGModel(nx=32, L=5e5, dt=14400.0, U1=0.1)
    x0 = _field(m, 4, scale=1e-9)
    x = m.forecast(x0, 540)
    assert torch.isfinite(x).all()
    assert float(m.kinetic_energy(x)) > 1e3 * float(m.kinetic_energy(x0))
    # with no shear and no β the same eddies only decay (drag, filter)
    calm = QGModel(nx=32, L=5e5, dt=14400.0, U1=0.0, beta=0.0)
    assert float(calm.kinetic_energy(calm.forecast(x0, 540))) < float(calm.kinetic_energy(x0))
    k, spec = m.ke_spectrum(x)
    assert spec.shape == (2, k.shape[0]) and bool((spec >= 0).all())


def test_initial_state_is_cached_and_deterministic():
    m = QGModel(nx=16, L=5e5, dt=14400.0)
    a = m.initial_state(spinup_time=30 * 86400.0)
    a += 1.0
    b = QGModel(nx=16, L=5e5, dt=14400.0).initial_state(spinup_time=30 * 86400.0)
    torch.testing.assert_close(m.initial_state(spinup_time=30 * 86400.0), b, rtol=0, atol=0)
    assert m.initial_state(torch.float32, spinup_time=30 * 86400.0).dtype == torch.float32
