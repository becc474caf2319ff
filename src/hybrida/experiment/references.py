"""Published rmse_a figures hybrida reproduces (``shared/REFERENCES.md``), as runnable rows.

Each :class:`ReferenceRow` names a preset, a method with its published
hyper-parameters, and the published time-mean analysis RMSE. The tests run
shortened versions; ``benchmarks/reproduce/reproduce.py`` runs them full length over
several seeds.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from hybrida.experiment.config import ExperimentConfig, validate_config
from hybrida.experiment.presets import get_preset


@dataclass(frozen=True)
class ReferenceRow:
    """One published result: ``method`` with ``params`` on ``preset`` gives ``rmse_a``."""

    preset: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    rmse_a: float = 0.0
    source: str = ""
    #: cycles of the shortened test run when the preset's default is too slow for this row
    short_cycles: int | None = None
    #: seeds (1..seeds) the median needs: more for rows whose runs now and then lose track
    seeds: int = 3

    def seed_list(self, given: list[int] | tuple[int, ...] = (1, 2, 3)) -> list[int]:
        """``given`` extended by the next integers until this row's ``seeds`` are reached."""
        out = list(given)
        while len(out) < self.seeds:
            out.append(max(out, default=0) + 1)
        return out

    @property
    def label(self) -> str:
        extras = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())
        return f"{self.preset} {self.method}" + (f" ({extras})" if extras else "")

    def tolerance(self, loose: float = 1.0) -> float:
        """Allowed |measured - published|: 0.02, or 5% above 0.5 (times ``loose``)."""
        base = 0.05 * self.rmse_a if self.rmse_a > 0.5 else 0.02
        return loose * base

    def config(
        self,
        seed: int | None = None,
        cycles: int | None = None,
        burn_in: float | None = None,
        climatology_steps: int | None = None,
    ) -> ExperimentConfig:
        """The experiment config of this row, optionally shortened."""
        data = copy.deepcopy(get_preset(self.preset))
        if climatology_steps is not None:
            data["climatology"]["steps"] = climatology_steps
        data["method"] = {"name": self.method, "params": dict(self.params)}
        if seed is not None:
            data["seed"] = seed
        if cycles is not None:
            data["cycles"] = cycles
        if burn_in is not None:
            data["burn_in"] = burn_in
        return validate_config(data)


_L63 = "Sakov, Oliver & Bertino 2012 setup (DAPPER sakov2012)"
_L96 = "Sakov & Oke 2008 setup (DAPPER sakov2008)"
_KS = "Bocquet, Raanes & Hannart 2019 setup (DAPPER bocquet2019)"
_UV = "Wilks 2005 setup (DAPPER wilks05)"
_B13 = "Bocquet & Sakov 2013 via DAPPER sakov2008 comments (dto=0.2, B = xB I)"
_ME = "Bocquet–Brajard model-error setup (cubic-term truth calibrated by us, see presets)"

ROWS: list[ReferenceRow] = [
    ReferenceRow("lorenz63/sakov2012", "climatology", {}, 7.6, _L63),
    ReferenceRow("lorenz63/sakov2012", "oi", {}, 1.25, _L63),
    ReferenceRow("lorenz63/sakov2012", "3dvar", {"xB": 0.1}, 1.04, _L63),
    ReferenceRow("lorenz63/sakov2012", "ekf", {"infl": 180.0}, 0.92, _L63),
    # DAPPER's row has rot=True; without the rotation the runs lose track more often (median of 21
    # seeds 0.653, seeds 1-3 0.597/0.593/0.657 on one CPU, 0.599/0.777/0.684 on another): fragile,
    # so the median takes 9 seeds (with rotation, seeds 1-13: median 0.598, 0.536-0.695)
    ReferenceRow("lorenz63/sakov2012", "etkf", {"N": 10, "infl": 1.02, "rot": True}, 0.60, _L63, seeds=9),
    # one run in a few loses track for a while (DAPPER's too, on the same truths): median of 7
    ReferenceRow("lorenz63/sakov2012", "enkf", {"N": 10, "infl": 1.04}, 0.65, _L63, seeds=7),
    ReferenceRow("lorenz63/sakov2012", "ienks", {"N": 10, "infl": 1.02, "rot": True}, 0.31, _L63, short_cycles=250),
    ReferenceRow("lorenz63/sakov2012", "pf", {"N": 100, "reg": 2.4, "NER": 0.3}, 0.38, _L63),
    ReferenceRow("lorenz63/sakov2012", "pf", {"N": 800, "reg": 0.9, "NER": 0.2}, 0.28, _L63, short_cycles=200),
    ReferenceRow("lorenz96/sakov2008", "climatology", {}, 3.6, _L96),
    ReferenceRow("lorenz96/sakov2008", "oi", {}, 0.95, _L96),
    ReferenceRow("lorenz96/sakov2008", "3dvar", {"xB": 0.02}, 0.41, _L96),
    ReferenceRow("lorenz96/sakov2008", "ekf", {"infl": 10.0}, 0.24, _L96),
    ReferenceRow("lorenz96/sakov2008", "enkf", {"N": 40, "infl": 1.06}, 0.22, _L96),
    ReferenceRow("lorenz96/sakov2008", "etkf", {"N": 28, "infl": 1.02}, 0.18, _L96),
    ReferenceRow("lorenz96/sakov2008", "enkf_n", {"N": 24, "rot": True}, 0.21, _L96 + "; EnKF_N comment"),
    ReferenceRow("lorenz96/sakov2008", "denkf", {"N": 40, "infl": 1.01}, 0.18, _L96),
    ReferenceRow("lorenz96/sakov2008", "letkf", {"N": 7, "infl": 1.04, "loc_rad": 4.0}, 0.22, _L96),
    ReferenceRow("lorenz96/sakov2008", "letkf", {"N": 10, "infl": 1.02, "loc_rad": 4.0}, 0.21, _L96),
    ReferenceRow("lorenz96/sakov2008", "ienks", {"N": 40, "infl": 1.01, "rot": True}, 0.17, _L96, short_cycles=300),
    ReferenceRow("lorenz96/bocquet2013", "4dvar", {"lag": 1, "xB": 0.2, "B": "identity"}, 0.46, _B13),
    ReferenceRow("lorenz96/bocquet2013", "4dvar", {"lag": 2, "xB": 0.1, "B": "identity"}, 0.39, _B13),
    ReferenceRow("lorenz96/bocquet2013", "4dvar", {"lag": 4, "xB": 0.02, "B": "identity"}, 0.37, _B13),
    ReferenceRow("ks/bocquet2019", "letkf", {"N": 4, "infl": 1.11, "loc_rad": 15 / 1.82}, 0.18, _KS),
    # N=6 and the ETKF: DAPPER's comments' inflation (1.06 / 1.03) loses track for long stretches in
    # some 2*10^4-cycle runs of both DAPPER 1.8.1 and hybrida; one step more inflation keeps every seed
    ReferenceRow("ks/bocquet2019", "letkf", {"N": 6, "infl": 1.08, "loc_rad": 25 / 1.82}, 0.14, _KS),
    ReferenceRow("ks/bocquet2019", "letkf", {"N": 16, "infl": 1.02, "loc_rad": 51 / 1.82}, 0.11, _KS),
    ReferenceRow("ks/bocquet2019", "etkf", {"N": 20, "infl": 1.04}, 0.115, _KS),
    # DAPPER 1.8.1's own OptInterp on its own bocquet2019 runs gives 0.527 (seeds 1-3:
    # 0.5265/0.5269/0.5268), i.e. the published 0.5 is rounded and misses its own bar
    ReferenceRow("ks/bocquet2019", "oi", {}, 0.5, _KS + "; DAPPER's own OI: 0.527"),
    ReferenceRow("ks/bocquet2019", "climatology", {}, 1.3, _KS),
    ReferenceRow("lorenz96/wilks05", "climatology", {}, 0.93, _UV),
    ReferenceRow("lorenz96/wilks05", "3dvar", {"xB": 2.0}, 0.39, _UV),
    ReferenceRow("lorenz96/wilks05", "etkf", {"N": 20, "adaptive": True}, 0.27, _UV),
    ReferenceRow("lorenz96/model_error", "etkf", {"N": 40, "adaptive": True}, 0.20, _ME),
]
