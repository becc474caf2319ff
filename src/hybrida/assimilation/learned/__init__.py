"""Learned analyses: the analysis step itself learned (AI-Var, CNN analysis, amortised filter, 4DVarNet,
generated ensembles) and DA in a learned latent space.

Each is an :class:`~hybrida.assimilation.base.AssimilationMethod` cycled by
:func:`hybrida.cycle.run_cycle` like the classical methods, saved as one ``.pt`` file by
:func:`save_learned_analysis` and loaded by :func:`load_learned_analysis` (registered as the
method name ``learned``: ``--set method.name=learned --set method.params.path=analysis.pt``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hybrida import registry
from hybrida.assimilation.learned.aivar import AIVar
from hybrida.assimilation.learned.amortised import AmortisedFilter
from hybrida.assimilation.learned.base import FORMAT, FORMAT_VERSION, LearnedAnalysis
from hybrida.assimilation.learned.cnn_analysis import CNNAnalysis
from hybrida.assimilation.learned.fourdvarnet import FourDVarNet
from hybrida.assimilation.learned.latent import LatentDA, latent_method, latent_observation
from hybrida.assimilation.learned.latent_space import AutoencoderReduction, PODReduction, Reduction
from hybrida.assimilation.learned.score_ensemble import GeneratedEnsembleETKF
from hybrida.io.checkpoint import atomic_torch_save

#: payload kind -> class implementing it
KINDS: dict[str, str] = {
    "aivar": "hybrida.assimilation.learned.aivar:AIVar",
    "cnn_analysis": "hybrida.assimilation.learned.cnn_analysis:CNNAnalysis",
    "amortised": "hybrida.assimilation.learned.amortised:AmortisedFilter",
    "4dvarnet": "hybrida.assimilation.learned.fourdvarnet:FourDVarNet",
    "score": "hybrida.assimilation.learned.score_ensemble:GeneratedEnsembleETKF",
    "learned_filter": "hybrida.assimilation.ensemble.learned_filter:LearnedLETKF",
    "latent": "hybrida.assimilation.learned.latent:LatentDA",
}


def save_learned_analysis(method: LearnedAnalysis, path: str | Path) -> Path:
    """Write ``method.to_payload()`` to ``path`` atomically."""
    if not isinstance(method, LearnedAnalysis):
        raise TypeError(f"expected a learned analysis, got {type(method).__name__}")
    return atomic_torch_save(method.to_payload(), path)


def load_learned_analysis(path: str | Path | None = None, **params: Any) -> LearnedAnalysis:
    """The learned analysis saved at ``path``; ``params`` override its run-time settings.

    Raises a ValueError naming the file when it is missing, not a learned analysis, or of an
    unknown kind.
    """
    if path is None:
        raise ValueError("method 'learned' needs params.path: the analysis.pt written by `hybrida learn analysis`")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"method 'learned': no file {path} (train one with `hybrida learn analysis PRESET`)")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a hybrida learned-analysis file")
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported learned-analysis format version {payload.get('version')!r}")
    cls = registry.resolve(KINDS, str(payload.get("kind")), "learned-analysis kind")
    return cls.from_payload(payload, path=path, **params)


__all__ = [
    "KINDS",
    "AIVar",
    "AmortisedFilter",
    "AutoencoderReduction",
    "CNNAnalysis",
    "FourDVarNet",
    "GeneratedEnsembleETKF",
    "LatentDA",
    "LearnedAnalysis",
    "PODReduction",
    "Reduction",
    "latent_method",
    "latent_observation",
    "load_learned_analysis",
    "save_learned_analysis",
]
