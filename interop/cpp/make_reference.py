"""Write a small correction, its TorchScript export and a reference file for correction_host.

Usage: python make_reference.py OUTDIR  ->  OUTDIR/correction.torchscript.pt (+ .json), OUTDIR/reference.bin
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from hybrida.io.export import export_file
from hybrida.learn.correction_persist import save_correction
from hybrida.models.corrected import CorrectedModel
from hybrida.models.lorenz96 import Lorenz96
from hybrida.nn import PolyConv


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model = CorrectedModel(Lorenz96(40), PolyConv(degree=2, seed=0, scale=0.1), "resolvent", 2.3, 3.6, 0.2)
    model.requires_grad_(False)
    exported = export_file(save_correction(out / "correction.pt", model), fmt="torchscript")
    g = torch.Generator().manual_seed(17)
    x = 3.0 + 2.0 * torch.randn(16, 40, generator=g, dtype=torch.float64)
    y = model.correction(x)
    header = np.array(x.shape, dtype="<i8").tobytes()
    (out / "reference.bin").write_bytes(header + x.numpy().astype("<f8").tobytes() + y.numpy().astype("<f8").tobytes())
    print(exported)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
