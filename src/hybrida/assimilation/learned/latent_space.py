"""Reduced representations of a state: POD/EOF (linear) and a periodic convolutional autoencoder.

A reduction maps full states ``(..., n)`` to latent states ``(..., k)`` (:meth:`encode`) and
back (:meth:`decode`); latent-space DA (:mod:`hybrida.assimilation.learned.latent`) analyses
in the latent space with H∘decode as observation operator (Casas et al. 2020; Peyron et al.
2021). Both follow the input's dtype and device and are differentiable (autodiff Jacobians
of the decoder serve the variational methods).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from hybrida.nn.latent_autoencoder import PeriodicAutoencoder


def check_state(x: Tensor, n: int, owner: str) -> Tensor:
    """``x`` if it is a floating tensor whose last dimension is ``n``; else a ValueError saying so."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"{owner}: expected a floating-point state tensor (..., {n}), got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] != n:
        raise ValueError(
            f"{owner}: state size {x.shape[-1] if x.ndim else 0} does not match the reduction's n={n} "
            "(fit the reduction on states of this model)"
        )
    return x


class Reduction(ABC):
    """Encoder/decoder pair between the state (size ``n``) and a latent space (size ``k``)."""

    n: int
    k: int

    @abstractmethod
    def encode(self, x: Tensor) -> Tensor:
        """Latent ``(..., k)`` of states ``(..., n)``."""

    @abstractmethod
    def decode(self, z: Tensor) -> Tensor:
        """States ``(..., n)`` of latents ``(..., k)``."""

    def reconstruct(self, x: Tensor) -> Tensor:
        """decode(encode(x)): the projection of ``x`` onto the representation's manifold."""
        return self.decode(self.encode(x))

    @abstractmethod
    def to_payload(self) -> dict[str, Any]:
        """Plain values and tensors that :func:`reduction_from_payload` rebuilds this from."""


class PODReduction(Reduction):
    """POD/EOF: x ≈ x̄ + U z with the ``k`` leading EOFs U ``(n, k)`` of a free run (Lumley 1967).

    encode(x) = Uᵀ (x - x̄), decode(z) = x̄ + U z; ``singular_values`` of the centred
    snapshot matrix (all of them) give the explained variance. Exact on the affine span
    x̄ + range(U).
    """

    kind = "pod"

    def __init__(self, mean: Tensor, basis: Tensor, singular_values: Tensor | None = None):
        mean, basis = torch.as_tensor(mean), torch.as_tensor(basis)
        if mean.ndim != 1 or basis.ndim != 2 or basis.shape[0] != mean.shape[0]:
            raise ValueError(
                f"PODReduction: mean must be (n,) and basis (n, k), got {tuple(mean.shape)} and {tuple(basis.shape)}"
            )
        self.n, self.k = basis.shape
        self.mean, self.basis = mean, basis.to(mean)
        self.singular_values = None if singular_values is None else torch.as_tensor(singular_values).to(mean)

    def encode(self, x: Tensor) -> Tensor:
        """Uᵀ (x - x̄) ``(..., k)``."""
        check_state(x, self.n, "PODReduction.encode")
        return (x - self.mean.to(x)) @ self.basis.to(x)

    def decode(self, z: Tensor) -> Tensor:
        """x̄ + U z ``(..., n)``."""
        check_state(z, self.k, "PODReduction.decode")
        return self.mean.to(z) + z @ self.basis.to(z).mT

    def explained_variance(self) -> Tensor:
        """Cumulative fraction of the snapshot variance explained by the leading 1..r EOFs."""
        if self.singular_values is None:
            raise ValueError("PODReduction: no singular values stored")
        s2 = self.singular_values**2
        return torch.cumsum(s2, 0) / s2.sum()

    def to_payload(self) -> dict[str, Any]:
        """``kind``, mean, basis and singular values."""
        return {
            "kind": self.kind, "mean": self.mean.cpu().clone(), "basis": self.basis.cpu().clone(),
            "singular_values": None if self.singular_values is None else self.singular_values.cpu().clone(),
        }

    def __repr__(self) -> str:
        return f"PODReduction(n={self.n}, k={self.k})"


class AutoencoderReduction(Reduction):
    """Autoencoder x ≈ loc + scale · dec(enc((x - loc) / scale)) with a :class:`PeriodicAutoencoder`.

    ``loc`` and ``scale`` (scalars: the rings are homogeneous) standardise the states seen
    by the network. The network's weights may be float32; a float64 copy (cached) serves
    float64 states so DA keeps its precision and autodiff Jacobians work.
    """

    kind = "autoencoder"

    def __init__(self, net: PeriodicAutoencoder, loc: float = 0.0, scale: float = 1.0):
        if not isinstance(net, PeriodicAutoencoder):
            raise ValueError(f"AutoencoderReduction: expected a PeriodicAutoencoder, got {type(net).__name__}")  # noqa: TRY004
        if not float(scale) > 0:
            raise ValueError(f"AutoencoderReduction: scale must be > 0, got {scale}")
        self.net = net.eval()
        self.n, self.k = net.n, net.latent
        self.loc, self.scale = float(loc), float(scale)
        self._copies: dict[tuple[torch.dtype, torch.device], nn.Module] = {}

    def _net_for(self, x: Tensor) -> PeriodicAutoencoder:
        p = next(self.net.parameters())
        if p.dtype == x.dtype and p.device == x.device:
            return self.net
        key = (x.dtype, x.device)
        if key not in self._copies:
            net = copy.deepcopy(self.net).to(device=x.device, dtype=x.dtype)
            self._copies[key] = net.requires_grad_(False).eval()
        return self._copies[key]  # type: ignore[return-value]

    def refresh(self) -> None:
        """Forget the cached dtype copies (call after changing the network's weights)."""
        self._copies.clear()

    def encode(self, x: Tensor) -> Tensor:
        """enc((x - loc) / scale) ``(..., k)``."""
        check_state(x, self.n, "AutoencoderReduction.encode")
        return self._net_for(x).encode((x - self.loc) / self.scale)

    def decode(self, z: Tensor) -> Tensor:
        """loc + scale · dec(z) ``(..., n)``."""
        check_state(z, self.k, "AutoencoderReduction.decode")
        return self.loc + self.scale * self._net_for(z).decode(z)

    def to_payload(self) -> dict[str, Any]:
        """``kind``, loc, scale and the network (config and weights)."""
        return {
            "kind": self.kind, "loc": self.loc, "scale": self.scale, "config": dict(self.net.config),
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
        }

    def __repr__(self) -> str:
        return f"AutoencoderReduction(n={self.n}, k={self.k}, config={self.net.config})"


def reduction_from_payload(payload: dict[str, Any]) -> Reduction:
    """The reduction saved by ``to_payload`` (a ValueError for an unknown kind)."""
    kind = payload.get("kind")
    if kind == PODReduction.kind:
        return PODReduction(payload["mean"], payload["basis"], payload.get("singular_values"))
    if kind == AutoencoderReduction.kind:
        net = PeriodicAutoencoder(**payload["config"])
        state = payload["state_dict"]
        net.to(next(v.dtype for v in state.values() if v.is_floating_point()))
        net.load_state_dict(state)
        return AutoencoderReduction(net, payload["loc"], payload["scale"])
    raise ValueError(f"unknown reduction kind {kind!r}; expected 'pod' or 'autoencoder'")
