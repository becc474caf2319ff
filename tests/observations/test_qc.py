"""Quality control: background check, learned gross-error detector, gross-error scenario, chain."""

from __future__ import annotations

import pytest
import torch

from hybrida.assimilation.base import GaussianState
from hybrida.learn.qc import fit_gross_error_detector, gross_error_examples
from hybrida.observations.networks import IdentityObs, RandomSubsetObs
from hybrida.observations.qc import (
    QC_BACKGROUND,
    QC_GOOD,
    QC_LEARNED,
    QC_MISSING,
    BackgroundCheck,
    Chain,
    GrossErrorObs,
    LearnedGrossErrorDetector,
    QualityControl,
    detection_rates,
)

N = 40


def _twin(seed: int, cycles: int, prob: float = 0.08, spread: float = 0.5):
    """Truth ~ N(0, 3^2), priors = ensembles around it (background error ``spread``), obs with gross errors."""
    g = torch.Generator().manual_seed(seed)
    system = GrossErrorObs(IdentityObs(N, std=1.0), prob=prob, k=10.0)
    truth = 3.0 * torch.randn(cycles, N, generator=g, dtype=torch.float64)
    obs = [system.observe(truth[k], k + 1, g) for k in range(cycles)]
    priors = [
        truth[k] + spread * torch.randn(N, generator=g, dtype=torch.float64)
        + spread * torch.randn(20, N, generator=g, dtype=torch.float64)
        for k in range(cycles)
    ]
    return obs, priors


def test_gross_error_obs_injects_signed_k_sigma_errors_reproducibly():
    system = GrossErrorObs(IdentityObs(N, std=2.0), prob=0.1, k=10.0)
    x = torch.zeros(N, dtype=torch.float64)
    a = [system.observe(x, k, torch.Generator().manual_seed(3)) for k in range(1, 3)]
    b = [system.observe(x, k, torch.Generator().manual_seed(3)) for k in range(1, 3)]
    assert all(torch.equal(u.y, v.y) for u, v in zip(a, b))
    many = [system.observe(x, 1, g) for g in [torch.Generator().manual_seed(0)] for _ in range(100)]
    mask = torch.stack([o.meta["gross"] for o in many])
    y = torch.stack([o.y for o in many])
    assert 0.07 < float(mask.double().mean()) < 0.13
    assert bool((y[mask].abs() > 12.0).all())  # 20 +- a few sigma of noise (sigma 2)
    assert float(y[~mask].abs().max()) < 10.0


def test_background_check_flags_gross_errors_and_keeps_clean_ones():
    obs, priors = _twin(0, 60)
    check = BackgroundCheck(k=5.0)
    assert isinstance(check, QualityControl)
    flags = []
    for o, p in zip(obs, priors):
        screened, f = check.screen(o, p)
        assert f.dtype == torch.int8 and f.shape == (N,)
        assert bool(torch.isnan(screened.y[f == QC_BACKGROUND]).all())
        assert torch.equal(screened.y[f == QC_GOOD], o.y[f == QC_GOOD])
        flags.append(f)
    hit, far = detection_rates(flags, [o.meta["gross"] for o in obs])
    assert hit > 0.98 and far < 0.003


def test_background_check_with_static_B_and_gaussian_prior_and_missing_values():
    obs, priors = _twin(1, 20)
    B = 0.5 * torch.eye(N, dtype=torch.float64)
    for o, p in zip(obs, priors):
        o.y[:3] = torch.nan
        _, f_single = BackgroundCheck(5.0, B=B).screen(o, p.mean(0))
        _, f_gauss = BackgroundCheck(5.0).screen(o, GaussianState(p.mean(0), B))
        assert torch.equal(f_single, f_gauss)
        assert bool((f_single[:3] == QC_MISSING).all())
        assert torch.equal(f_single[3:] == QC_BACKGROUND, o.meta["gross"][3:])
    with pytest.raises(ValueError, match="static B"):
        BackgroundCheck(5.0).screen(obs[0], priors[0].mean(0))


def test_background_check_with_a_subset_network_and_nonlinear_flag_count():
    g = torch.Generator().manual_seed(2)
    system = GrossErrorObs(RandomSubsetObs(N, 15, std=1.0), prob=0.2, k=10.0)
    x = torch.randn(N, generator=g, dtype=torch.float64)
    o = system.observe(x, 1, g)
    prior = x + 0.3 * torch.randn(30, N, generator=g, dtype=torch.float64)
    _, f = BackgroundCheck(5.0).screen(o, prior)
    assert f.shape == (15,)
    assert torch.equal(f == QC_BACKGROUND, o.meta["gross"])


def _fit(epochs: int, lr: float):
    obs, priors = _twin(10, 150)
    X, y = gross_error_examples(obs, priors)
    det = LearnedGrossErrorDetector(width=16, depth=2, seed=0)
    hist = fit_gross_error_detector(det, X, y, epochs=epochs, lr=lr, batch_size=4096, target_far=0.01, seed=0)
    test_obs, test_priors = _twin(11, 60)
    flags = [det.screen(o, p)[1] for o, p in zip(test_obs, test_priors)]
    return det, hist, detection_rates(flags, [o.meta["gross"] for o in test_obs]), flags


def test_learned_detector_detects_on_held_out_twins_and_fails_untrained(tmp_path):
    det, hist, (hit, far), flags = _fit(epochs=60, lr=2e-2)
    assert hit > 0.95 and far < 0.03, (hit, far)
    assert all(bool(((f == QC_GOOD) | (f == QC_LEARNED)).all()) for f in flags)
    # learning off: the same pipeline with no effective training misses the gross errors
    _, _, (hit0, far0), _ = _fit(epochs=1, lr=1e-12)
    assert hit0 < 0.5, (hit0, far0)
    # save/load round trip keeps the decisions
    det.save(tmp_path / "det.pt")
    again = LearnedGrossErrorDetector.load(tmp_path / "det.pt")
    obs, priors = _twin(12, 5)
    for o, p in zip(obs, priors):
        assert torch.equal(det.screen(o, p)[1], again.screen(o, p)[1])
    assert again.threshold == det.threshold == hist.threshold


def test_chain_keeps_the_first_rejection_and_nans_every_rejected_value():
    obs, priors = _twin(4, 10, prob=0.2)

    class RejectFirst:
        def screen(self, o, prior):
            f = torch.where(torch.isfinite(o.y), QC_GOOD, QC_MISSING).to(torch.int8)
            f[0] = QC_LEARNED
            y = o.y.clone()
            y[0] = torch.nan
            from dataclasses import replace

            return replace(o, y=y), f

    for o, p in zip(obs, priors):
        screened, f = Chain([BackgroundCheck(5.0), RejectFirst()]).screen(o, p)
        expect = torch.where(o.meta["gross"], QC_BACKGROUND, QC_GOOD).to(torch.int8)
        if expect[0] == QC_GOOD:
            expect[0] = QC_LEARNED
        assert torch.equal(f, expect)
        assert bool(torch.isnan(screened.y[f != QC_GOOD]).all())


def test_detection_rates_counts_rejections_against_the_true_mask():
    flags = [torch.tensor([0, 2, 3, 1, 0], dtype=torch.int8)]
    gross = [torch.tensor([False, True, False, True, True])]
    hit, far = detection_rates(flags, gross)
    assert hit == pytest.approx(0.5)  # of 2 available gross, 1 rejected (the missing one is left out)
    assert far == pytest.approx(0.5)  # of 2 clean, 1 rejected


def test_etkf_cycle_with_the_background_check_stays_near_the_clean_run():
    """Through run_cycle's ``qc``: no QC is >= 2x worse than clean obs, the background check within 20%."""
    from dataclasses import replace

    from hybrida.assimilation.ensemble.etkf import ETKF
    from hybrida.cycle import run_cycle
    from hybrida.experiment.twin import make_twin
    from hybrida.models.lorenz96 import Lorenz96

    model = Lorenz96(N)
    g = torch.Generator().manual_seed(0)
    x0 = model.forecast(model.initial_state() + torch.randn(N, generator=g, dtype=torch.float64), 300)
    twin = make_twin(model, GrossErrorObs(IdentityObs(N, std=1.0), prob=0.1, k=10.0), x0, 150, g)
    clean = replace(twin, observations=[replace(o, y=o.y - o.meta["gross_error"]) for o in twin.observations])

    def rmse(t, qc=None):
        etkf = ETKF(N=20, infl=1.04)
        state = etkf.initial_state(x0, 1.0, torch.Generator().manual_seed(1))
        recs = [r for r, _ in run_cycle(model, etkf, state, t.truth, t.observations, 1, qc=qc,
                                        generator=torch.Generator().manual_seed(2), innovations=False,
                                        probabilistic_scores=False)]
        return sum(r.rmse_a for r in recs[50:]) / len(recs[50:]), recs

    base, _ = rmse(clean)
    raw, _ = rmse(twin)
    checked, recs = rmse(twin, BackgroundCheck(5.0))
    assert raw > 2.0 * base and checked < 1.2 * base, (base, raw, checked)
    hit, far = detection_rates([r.qc_flags for r in recs], [o.meta["gross"] for o in twin.observations])
    assert hit > 0.99 and far < 0.002
