"""Experiments: configs, presets, the checkpointed runner, sweeps, and end-to-end pipelines.

Twins (:mod:`~hybrida.experiment.twin`), pydantic configs and presets, the runner and Dask
sweeps; the pipelines that chain DA and learning live here too, because they run experiments:
reanalyses as training data (:mod:`~hybrida.experiment.reanalysis`), the iterative DA–ML loop
(:mod:`~hybrida.experiment.loop`) and the surrogate pipeline behind ``hybrida learn surrogate``
(:mod:`~hybrida.experiment.surrogate_pipeline`, its config and report modules).
"""
