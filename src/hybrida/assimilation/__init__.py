"""Assimilation methods: one protocol, ``analyse(prior, obs, t, generator) -> posterior``.

Families live in sub-packages: :mod:`~hybrida.assimilation.ensemble` (EnKF, ETKF, LETKF, EnKF-N,
iEnKS, EnKS; inflation and localisation, where learned localisation/inflation will plug in),
:mod:`~hybrida.assimilation.variational` (3D-Var, 4D-Var, EnVar, OI, EKF) and
:mod:`~hybrida.assimilation.particle` (bootstrap and local particle filters). Learned analyses
(AI-Var, CNN analyses, amortised filters) will live in ``assimilation/learned/`` and implement
the same protocol, so :func:`hybrida.cycle.run_cycle` cycles them like any other method.
"""
