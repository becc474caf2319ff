"""hybrida: hybrid data assimilation and machine learning in PyTorch.

Sub-packages, dependencies pointing down: :mod:`hybrida.nn` (network architectures),
:mod:`hybrida.models` and :mod:`hybrida.observations` (physics and learned models, operators),
:mod:`hybrida.assimilation` (every method is ``analyse(prior, obs, t)``), :mod:`hybrida.learn`
(training and diagnostics), :mod:`hybrida.cycle` (the forecast–analysis loop),
:mod:`hybrida.experiment` (twins, configs, runner, sweeps, end-to-end pipelines), :mod:`hybrida.io`.
"""
