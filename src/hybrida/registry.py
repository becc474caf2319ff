"""Names users write in configs, mapped to the classes that implement them (imported lazily)."""

from __future__ import annotations

import importlib
from typing import Any

MODELS: dict[str, str] = {
    "lorenz63": "hybrida.models.lorenz63:Lorenz63",
    "lorenz96": "hybrida.models.lorenz96:Lorenz96",
    "lorenz96_two_scale": "hybrida.models.lorenz96_two_scale:Lorenz96TwoScale",
    "ks": "hybrida.models.ks:KuramotoSivashinsky",
    "lorenz96_cubic": "hybrida.models.lorenz96_variants:Lorenz96Cubic",
    "local_level": "hybrida.models.local_level:LocalLevel",
    "recharge": "hybrida.models.recharge:RechargeOscillator",
    "qg": "hybrida.models.qg:QGModel",
    # a trained surrogate saved by hybrida.learn.save_surrogate: params {path: FILE}
    "surrogate": "hybrida.learn.persist:load_surrogate",
}

METHODS: dict[str, str] = {
    "enkf": "hybrida.assimilation.ensemble.enkf:EnKF",
    "etkf": "hybrida.assimilation.ensemble.etkf:ETKF",
    "enkf_n": "hybrida.assimilation.ensemble.enkf_n:EnKFN",
    "denkf": "hybrida.assimilation.ensemble.denkf:DEnKF",
    "letkf": "hybrida.assimilation.ensemble.letkf:LETKF",
    "3dvar": "hybrida.assimilation.variational.threedvar:ThreeDVar",
    "oi": "hybrida.assimilation.variational.oi:OptimalInterpolation",
    "ekf": "hybrida.assimilation.variational.ekf:EKF",
    "climatology": "hybrida.assimilation.variational.climatology:Climatology",
    "4dvar": "hybrida.assimilation.variational.fourdvar:FourDVar",
    "envar": "hybrida.assimilation.variational.envar:HybridEnVar",
    "envar4d": "hybrida.assimilation.variational.envar4d:HybridEnVar4D",
    "augmented": "hybrida.assimilation.ensemble.augmented:AugmentedEnsemble",
    "ienks": "hybrida.assimilation.ensemble.ienks:IEnKS",
    "pf": "hybrida.assimilation.particle.bootstrap:BootstrapPF",
    "lpf": "hybrida.assimilation.particle.local:LocalPF",
    "online_correction": "hybrida.learn.online:OnlineCorrectionEnsemble",
    # a learned analysis saved by `hybrida learn analysis`: params {path: FILE}
    "learned": "hybrida.assimilation.learned:load_learned_analysis",
}

OBSERVATIONS: dict[str, str] = {
    "identity": "hybrida.observations.networks:IdentityObs",
    "subset": "hybrida.observations.networks:SubsetObs",
    "every_kth": "hybrida.observations.networks:EveryKthObs",
    "random_subset": "hybrida.observations.networks:RandomSubsetObs",
    "radiance": "hybrida.observations.networks:RadianceObs",
    "alternating": "hybrida.observations.alternating:AlternatingHalvesObs",
    "random_grid": "hybrida.observations.grid2d:RandomGridObs",
    "rotating": "hybrida.observations.rotating:RotatingEveryKthObs",
}


QC: dict[str, str] = {
    # |O - B| > k sqrt(HBH^T + R) rejected
    "background": "hybrida.observations.qc:BackgroundCheck",
}


def resolve(table: dict[str, str], name: str, what: str) -> Any:
    """Import the class registered under ``name``, or a ``'package.module:Class'`` plugin path.

    Unknown names list the allowed ones; a plugin path that does not import
    raises ImportError.
    """
    if ":" in name:
        path = name
    elif name in table:
        path = table[name]
    else:
        allowed = ", ".join(sorted(table))
        raise ValueError(f"unknown {what} '{name}'; choose one of: {allowed}")
    module, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except AttributeError as err:
        raise ImportError(str(err)) from None
