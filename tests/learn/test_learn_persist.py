"""Save/load of surrogates: identical outputs, config kept, loadable without the training code."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hybrida.learn import load_surrogate, save_surrogate
from hybrida.models import SurrogateModel
from hybrida.nn import BrajardCNN, ResidualMLP


def _surrogate(net, n=10, scheme="rk4"):
    g = torch.Generator().manual_seed(5)
    traj = 1.0 + 2.0 * torch.randn(30, n, generator=g, dtype=torch.float64)
    return SurrogateModel.from_trajectory(net, traj, 0.05, scheme=scheme, per_variable=True)


@pytest.mark.parametrize(
    ("net", "scheme"),
    [
        (BrajardCNN(filters=3, hidden=4, seed=0), "rk4"),
        (ResidualMLP(10, width=8, seed=0).double(), "increment"),
    ],
)
def test_round_trip_identical_outputs(tmp_path, net, scheme):
    m = _surrogate(net, scheme=scheme)
    cfg = {"source": "truth", "epochs": 3, "lr": 1e-3, "layers": [1, 2]}
    path = save_surrogate(tmp_path / "sub" / "s.pt", m, cfg)
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.pt"]  # no temporary left behind
    loaded = load_surrogate(path)
    assert loaded.training_config == cfg and loaded.scheme == scheme and loaded.dt == m.dt
    assert next(loaded.net.parameters()).dtype == next(m.net.parameters()).dtype
    x = m.initial_state().expand(3, 10)
    with torch.no_grad():
        for dtype in (torch.float32, torch.float64):
            assert torch.equal(loaded.forecast(x.to(dtype), 4), m.forecast(x.to(dtype), 4))
    assert torch.equal(loaded.initial_state(), m.initial_state())


def test_save_rejects_unregistered_network_and_load_rejects_other_files(tmp_path):
    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, z):
            return self.lin(z)

    with pytest.raises(ValueError, match="register_network"):
        save_surrogate(tmp_path / "x.pt", SurrogateModel(Mine(), n=4, dt=0.1), {})
    torch.save({"format": "other"}, tmp_path / "y.pt")
    with pytest.raises(ValueError, match="not a hybrida surrogate"):
        load_surrogate(tmp_path / "y.pt")
