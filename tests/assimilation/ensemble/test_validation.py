"""Constructor and input validation of the ensemble methods: clear ValueErrors."""

from __future__ import annotations

import pytest
import torch
from ens_helpers import subset_obs

from hybrida.assimilation.ensemble import ETKF, LETKF, DEnKF, EnKF
from hybrida.observations.base import Observation
from hybrida.observations.errors import DiagonalError

METHODS = [EnKF, ETKF, DEnKF, lambda N, **kw: LETKF(N, loc_rad=2.0, **kw)]


@pytest.mark.parametrize("make", METHODS)
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"N": 1}, "N must be an integer >= 2"),
        ({"N": 5.0}, "N must be an integer"),
        ({"N": True}, "N must be an integer"),
        ({"N": 5, "infl": 0.0}, "infl"),
        ({"N": 5, "infl": float("nan")}, "infl"),
        ({"N": 5, "rtps": 1.5}, "rtps"),
        ({"N": 5, "rtpp": -0.1}, "rtpp"),
        ({"N": 5, "adaptive": "yes"}, "adaptive"),
    ],
)
def test_bad_hyperparameters(make, kwargs, match):
    kwargs = dict(kwargs)
    N = kwargs.pop("N")
    with pytest.raises(ValueError, match=match):
        make(N, **kwargs)


@pytest.mark.parametrize("make", METHODS)
def test_bad_prior_and_operator(make):
    n = 6
    obs = subset_obs(torch.arange(n), torch.zeros(n, dtype=torch.float64), 1.0, n)
    method = make(4)
    with pytest.raises(ValueError, match="members"):
        method.analyse(torch.zeros(5, n, dtype=torch.float64), obs)
    with pytest.raises(ValueError, match=r"\(\.\.\., N, n\)"):
        method.analyse(torch.zeros(n, dtype=torch.float64), obs)
    with pytest.raises(ValueError, match="floating"):
        method.analyse(torch.zeros(4, n, dtype=torch.long), obs)
    bad = Observation(
        y=torch.zeros(3, dtype=torch.float64),
        operator=lambda x: x[..., :2],
        error=DiagonalError(torch.ones(3, dtype=torch.float64)),
        locations=torch.arange(3.0),
    )
    with pytest.raises(ValueError, match="observation operator returned shape"):
        method.analyse(torch.randn(4, n, dtype=torch.float64), bad)
