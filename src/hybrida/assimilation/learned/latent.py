"""Latent-space DA: any ensemble, variational or particle method analysing in a reduced space.

The wrapper :class:`LatentDA` takes full-space priors (an ensemble ``(N, n)``, a state ``(n,)``
or particles), encodes them with a :class:`~hybrida.assimilation.learned.latent_space.Reduction`,
lets the wrapped method analyse the latent state with the observation operator H∘decode
(:func:`latent_observation`), and decodes the latent posterior back to the full space
(Casas et al. 2020; Peyron et al. 2021), so :func:`hybrida.cycle.run_cycle` cycles it
unchanged. The forecast runs in full space with the model (default) or in the latent space
with a learned latent surrogate (:class:`LatentSurrogate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from hybrida.assimilation.base import AssimilationMethod, ParticleState, State
from hybrida.assimilation.learned.base import LearnedAnalysis, rebuild_network
from hybrida.assimilation.learned.latent_space import Reduction, check_state, reduction_from_payload
from hybrida.models.base import Model
from hybrida.observations.base import Observation

UPDATES = ("increment", "replace")


def latent_observation(obs: Observation, reduction: Reduction, residual: Tensor | None = None) -> Observation:
    """The same observations seen from the latent space: operator z ↦ H(decode(z) + r), same y and R.

    ``residual`` r (``(n,)`` or one per member ``(N, n)``, default 0) is the part of the prior
    the reduction does not represent, x_f - decode(encode(x_f)): with it, H is applied to the
    full prior state at z = encode(x_f), so the innovations are those of the full prior and
    only the correction is restricted to the latent space. No locations (latent variables have
    no place on the grid, so only non-local methods apply). ``matrix`` is the constant
    Jacobian H U of the affine operator for POD with a linear H (the variational methods then
    skip autodiff); otherwise None and the Jacobian of H∘decode comes from autodiff.
    """
    op, decode = obs.operator, reduction.decode
    if residual is None:
        operator = lambda z: op(decode(z))
    else:
        r = residual.detach()
        operator = lambda z: op(decode(z) + r)
    matrix = None
    basis = getattr(reduction, "basis", None)
    if basis is not None and obs.matrix is not None:
        matrix = obs.matrix.to(basis) @ basis
    return Observation(
        y=obs.y, operator=operator, error=obs.error, locations=None, matrix=matrix,
        meta={**obs.meta, "latent": True},
    )


class LatentSurrogate:
    """A learned forecast in the latent space: z_{c+1} = z_c + net((z_c - loc) / scale) · scale per cycle.

    ``steps`` model steps make one cycle of the network; ``loc``/``scale`` ``(k,)`` standardise
    the latent states it sees. The residual form keeps the identity as the untrained limit.
    """

    def __init__(self, net: nn.Module, steps: int, loc: Tensor, scale: Tensor):
        if int(steps) < 1:
            raise ValueError(f"LatentSurrogate: steps must be >= 1, got {steps}")
        self.net, self.steps = net.eval(), int(steps)
        self.loc, self.scale = torch.as_tensor(loc), torch.as_tensor(scale)

    def step(self, z: Tensor) -> Tensor:
        """One cycle ahead, ``(..., k)`` -> ``(..., k)``, in the input's dtype."""
        p = next(self.net.parameters())
        loc, scale = self.loc.to(p), self.scale.to(p)
        with torch.no_grad():
            dz = self.net((z.to(p) - loc) / scale) * scale
        return z + dz.to(z)

    def forecast(self, z: Tensor, n_steps: int) -> Tensor:
        """``n_steps`` model steps (a multiple of :attr:`steps`) ahead."""
        if n_steps % self.steps:
            raise ValueError(f"LatentSurrogate: trained for {self.steps} steps per cycle, asked for {n_steps}")
        for _ in range(n_steps // self.steps):
            z = self.step(z)
        return z


class LatentDA(LearnedAnalysis):
    """``method`` acting on the latent state of ``reduction``: encode → analyse → decode.

    Full-space posterior, per member (or the single state):

    * ``update="replace"``: x_a = decode(z_a), the posterior on the representation's manifold;
    * ``update="increment"`` (default): x_a = x_f + decode(z_a) - decode(z_f) with the
      observation operator z ↦ H(decode(z) + r_f), r_f = x_f - decode(z_f): the innovations are
      those of the full prior, the correction lies in the latent space, and the unresolved
      part r_f is kept from the forecast instead of being set to the manifold (the reduced-rank
      update of the SEEK filter, Pham et al. 1998). Both agree when the prior lies on the
      manifold.

    Particle filters always use ``replace`` (resampling loses the prior particle a posterior
    particle came from). ``method`` is any non-local hybrida method: ETKF/EnKF (latent
    ensemble ``(N, k)``), ThreeDVar with a latent climatology ``(k,), (k, k)`` (its Jacobian of
    H∘decode by autodiff), BootstrapPF (latent particles). ``surrogate``, a
    :class:`LatentSurrogate`, replaces the full-space forecast by encode → latent forecast →
    decode. ``spec`` ({"name", "params"}) records how ``method`` was built, so the whole
    analysis can be saved (:meth:`to_payload`) and loaded as method ``learned``.

    For a single-state prior (3D-Var) and a nonlinear decoder, ``linearise_once=True`` gives
    the latent observation the Jacobian of z ↦ H(decode(z) + r) at the background (one
    ``torch.func.jacfwd`` pass) as its ``matrix``: the variational method then runs one
    Gauss–Newton outer loop with that Jacobian (incremental 3D-Var with a single outer loop,
    Courtier et al. 1994) instead of an autodiff pass per CG iteration; ``False`` relinearises
    by autodiff at every iteration.
    """

    kind_name = "latent"

    def __init__(
        self,
        method: AssimilationMethod,
        reduction: Reduction,
        update: Literal["increment", "replace"] = "increment",
        surrogate: LatentSurrogate | None = None,
        spec: dict[str, Any] | None = None,
        linearise_once: bool = True,
    ):
        if not isinstance(method, AssimilationMethod):
            raise ValueError(f"LatentDA: method must be an AssimilationMethod, got {type(method).__name__}")  # noqa: TRY004
        if update not in UPDATES:
            raise ValueError(f"LatentDA: update must be one of {', '.join(UPDATES)}, got {update!r}")
        latent_n = getattr(method, "n", None)
        if latent_n is not None and latent_n != reduction.k:
            raise ValueError(
                f"LatentDA: the wrapped method has state size {latent_n}, the latent size is {reduction.k} "
                "(build its climatology from encoded states)"
            )
        self.method, self.reduction, self.update, self.surrogate = method, reduction, update, surrogate
        self.spec, self.linearise_once = spec, bool(linearise_once)
        self.kind, self.N = method.kind, method.N
        self.n, self.p, self.dtype = reduction.n, 0, torch.float64

    def check_inputs(self, prior: Tensor, obs: Observation) -> None:
        """A ValueError if the prior's state size differs from the reduction's ``n``."""
        check_state(prior, self.n, "LatentDA")

    def initial_state(self, mean: Tensor, std: Tensor | float, generator: torch.Generator | None = None) -> State:
        """The wrapped method's full-space initial state around ``mean``."""
        check_state(mean, self.n, "LatentDA")
        return self.method.initial_state(mean, std, generator)

    def forecast(self, model: Model, state: State, n_steps: int, t0: float = 0.0) -> State:
        """Full-space model forecast, or encode → latent surrogate → decode."""
        if self.surrogate is None:
            return self.method.forecast(model, state, n_steps, t0)
        red, sur = self.reduction, self.surrogate
        if isinstance(state, ParticleState):
            return ParticleState(red.decode(sur.forecast(red.encode(state.particles), n_steps)), state.weights)
        with torch.no_grad():
            return red.decode(sur.forecast(red.encode(state), n_steps))

    def analyse(
        self, prior: State, obs: Observation, t: float = 0.0, generator: torch.Generator | None = None
    ) -> State:
        """Full-space posterior: the wrapped method's analysis of the encoded prior, decoded."""
        red = self.reduction
        if isinstance(prior, ParticleState):
            lobs = latent_observation(obs, red)
            X = check_state(prior.particles, self.n, "LatentDA")
            with torch.no_grad():
                Z = red.encode(X)
            post = self.method.analyse(ParticleState(Z, prior.weights), lobs, t, generator)
            with torch.no_grad():
                return ParticleState(red.decode(post.particles), post.weights)
        if not isinstance(prior, Tensor):
            raise ValueError(  # noqa: TRY004
                f"LatentDA: prior must be a state (n,), an ensemble (N, n) or a ParticleState, got {type(prior).__name__}"
            )
        X = check_state(prior, self.n, "LatentDA").detach()
        with torch.no_grad():
            Z = red.encode(X)
            Xz = red.decode(Z)
        lobs = latent_observation(obs, red, X - Xz if self.update == "increment" else None)
        if Z.ndim == 1 and lobs.matrix is None and self.linearise_once:
            lobs.matrix = torch.func.jacfwd(lobs.operator)(Z).detach()
        Za = self.method.analyse(Z, lobs, t, generator)
        if not isinstance(Za, Tensor):
            raise ValueError(f"LatentDA: {type(self.method).__name__} returned {type(Za).__name__}, expected a tensor")  # noqa: TRY004
        with torch.no_grad():
            if self.update == "replace":
                return red.decode(Za.detach())
            return X + red.decode(Za.detach()) - Xz

    def diagnostics(self) -> dict[str, float]:
        """The wrapped method's diagnostics."""
        return self.method.diagnostics()

    def to_payload(self) -> dict[str, Any]:
        """The reduction, the wrapped method's spec (and latent climatology), the surrogate if any."""
        if self.spec is None:
            raise ValueError("LatentDA: built without spec={'name', 'params'}; use latent_method(...) to save it")
        extra: dict[str, Any] = {"reduction": self.reduction.to_payload(), "update": self.update, "spec": self.spec}
        nets = {}
        if self.surrogate is not None:
            nets["surrogate"] = self.surrogate.net
            extra["surrogate"] = {"steps": self.surrogate.steps, "loc": self.surrogate.loc, "scale": self.surrogate.scale}
        return self.payload_header(extra, **nets)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: str | Path | None = None, **params: Any) -> LatentDA:
        """Rebuild from :meth:`to_payload`; ``params`` override the wrapped method's parameters."""
        reduction = reduction_from_payload(payload["reduction"])
        spec = dict(payload["spec"])
        spec["params"] = {**spec.get("params", {}), **params}
        surrogate = None
        if "surrogate" in payload.get("networks", {}):
            s = payload["surrogate"]
            surrogate = LatentSurrogate(rebuild_network(payload["networks"]["surrogate"], path), s["steps"], s["loc"], s["scale"])
        return latent_method(spec["name"], reduction, update=payload.get("update", "increment"),
                             surrogate=surrogate, **spec["params"])

    def __repr__(self) -> str:
        return f"LatentDA({self.method!r}, {self.reduction!r}, update={self.update!r})"


#: latent method names -> hybrida method classes (all non-local)
LATENT_METHODS = ("etkf", "enkf", "3dvar", "pf")


def latent_method(
    name: str,
    reduction: Reduction,
    *,
    update: Literal["increment", "replace"] = "increment",
    surrogate: LatentSurrogate | None = None,
    **params: Any,
) -> LatentDA:
    """A :class:`LatentDA` wrapping the hybrida method ``name`` built with ``params`` in the latent space.

    ``3dvar`` needs ``climatology=(mean (k,), cov (k, k))`` of encoded states (lists are
    accepted, as saved in a payload).
    """
    from hybrida import registry

    if name not in LATENT_METHODS:
        raise ValueError(f"latent method {name!r} unknown; choose one of: {', '.join(LATENT_METHODS)}")
    kwargs = dict(params)
    if name == "3dvar":
        clim = kwargs.get("climatology")
        if clim is None:
            raise ValueError("latent 3dvar needs climatology=(mean (k,), cov (k, k)) of encoded states")
        kwargs["climatology"] = tuple(torch.as_tensor(c, dtype=torch.float64) for c in clim)
    cls = registry.resolve(registry.METHODS, name, "method")
    method = cls(**kwargs)
    saved = {k: (v.tolist() if isinstance(v, Tensor) else v) for k, v in params.items()}
    if "climatology" in saved:
        saved["climatology"] = [torch.as_tensor(c).tolist() for c in params["climatology"]]
    return LatentDA(method, reduction, update=update, surrogate=surrogate, spec={"name": name, "params": saved})
