"""A fully connected residual network (no spatial structure assumed)."""

from __future__ import annotations

from torch import Tensor, nn

from hybrida.nn.common import make_activation, positive_int, seeded


class ResidualMLP(nn.Module):
    """Fully connected network with residual blocks h <- h + act(W h + b); input and output (B, n).

    Generic (no spatial structure assumed): Linear(n, width), ``blocks``
    residual blocks, Linear(width, n). Used with ``scheme="increment"`` it is
    the residual map x -> x + net(x).
    """

    def __init__(
        self,
        n: int,
        width: int = 128,
        blocks: int = 2,
        activation: str = "gelu",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        n = positive_int("n", n)
        width = positive_int("width", width)
        if isinstance(blocks, bool) or int(blocks) != blocks or blocks < 0:
            raise ValueError(f"blocks must be an integer >= 0, got {blocks}")
        self.act = make_activation(activation)
        self.config = {"n": n, "width": width, "blocks": int(blocks), "activation": activation}
        with seeded(seed):
            self.lift = nn.Linear(n, width)
            self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(int(blocks)))
            self.proj = nn.Linear(width, n)

    def forward(self, z: Tensor) -> Tensor:
        h = self.act(self.lift(z))
        for lin in self.blocks:
            h = h + self.act(lin(h))
        return self.proj(h)

