"""Train, save and export the learned parts the interop hosts call, and write the Python reference files.

Usage: python interop/make_reference.py OUTDIR [--epochs N] [--lr-scale S]

Writes into OUTDIR (all seeded, ~15 s of CPU on one core):

- ``correction_{resolvent,tendency}.pt`` and their TorchScript exports (+ manifests, written by the
  ``hybrida export`` command): PolyConv corrections of L96 (n=40, F=8, dt=0.05) fitted with
  :func:`hybrida.learn.correction.fit_correction` on a short truth run of
  :class:`~hybrida.models.lorenz96_variants.Lorenz96Cubic` (F=8.5, gamma=0.04);
- ``reference_{resolvent,tendency}.bin``: the Python ``CorrectedModel`` trajectory (1000 steps);
- ``surrogate.pt`` and its export: a ResidualCNN surrogate (rk4 scheme) fitted on an L96 run;
- ``surrogate_reference.bin``: x, dx, dy, Python's M dx (torch.func.jvp) and M^T dy (vjp), and the
  surrogate's 200-step Python trajectory from x.

Binary layout (little-endian; the hosts read it with plain stream I/O):
trajectory: int64 magic 960417, n, steps, kind (0 resolvent, 1 tendency), fused (1: torch's L96 step
uses fused multiply-adds, 0: not; see :func:`l96_arithmetic`); float64 F, dt; float64
x[0..steps] ((steps + 1) * n values, x[0] the initial state).
surrogate: int64 magic 960418, n, steps; float64 x, dx, dy, M dx, M^T dy (n values each), then the
trajectory x[0..steps] ((steps + 1) * n values, x[0] = x).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from hybrida.io.export import default_out
from hybrida.learn.correction import correction_targets, fit_correction
from hybrida.learn.correction_persist import load_correction, save_correction
from hybrida.learn.persist import load_surrogate, save_surrogate
from hybrida.learn.train import fit
from hybrida.models.lorenz96 import Lorenz96
from hybrida.models.lorenz96_variants import Lorenz96Cubic
from hybrida.models.surrogate import SurrogateModel
from hybrida.nn import PolyConv, ResidualCNN

N, F, DT, STEPS, SURROGATE_STEPS = 40, 8.0, 0.05, 1000, 200
KINDS = {"resolvent": 0, "tendency": 1}
TRAJ_MAGIC, SURR_MAGIC = 960417, 960418


def _i8(*v: int) -> bytes:
    return np.asarray(v, dtype="<i8").tobytes()


def _f8(v: torch.Tensor | float) -> bytes:
    return np.asarray(torch.as_tensor(v, dtype=torch.float64).detach().numpy(), dtype="<f8").tobytes()


def l96_arithmetic() -> str | None:
    """Which arithmetic torch's L96 RK4 step uses, bit for bit: "fused", "unfused" or None (neither).

    The step is a + b*c (``addcmul``) and a + alpha*b (``add`` with alpha) on shifted copies of x.
    torch's vectorised CPU kernels (AVX2, AVX-512) round each with one fused multiply-add; its
    scalar kernels (``ATEN_CPU_CAPABILITY=default``) round the product and the sum separately. The
    hosts do what the reference file says, so that the 1000-step chaotic trajectories can agree to
    1e-10 (one round-off apart they differ by O(10) after 1000 steps).
    """
    from fractions import Fraction

    def fused(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        b = np.broadcast_to(b, a.shape)
        return np.array([float(Fraction(p) * Fraction(q) + Fraction(r)) for p, q, r in zip(a, b, c)])

    def unfused(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        return a * b + c

    x = Lorenz96(N, F, DT).initial_state(spinup_steps=100).numpy()
    want = Lorenz96(N, F, DT).step(torch.from_numpy(x)).numpy()
    for name, mad in (("fused", fused), ("unfused", unfused)):
        def tend(z: np.ndarray, mad=mad) -> np.ndarray:
            return mad(z[3:] - z[:-3], z[1:-2], F - z[2:-1])

        z = np.concatenate((x[-8:], x, x[:4]))
        h = np.float64(0.5 * DT)
        k1 = tend(z)
        k2 = tend(mad(k1, h, z[2:-1]))
        k3 = tend(mad(k2, h, z[4:-2]))
        k4 = tend(mad(k3, np.float64(DT), z[6:-3]))
        acc = mad(k3[2:-1], np.float64(2.0), mad(k2[4:-2], np.float64(2.0), k1[6:-3]))
        if np.array_equal(mad(acc + k4, np.float64(DT / 6.0), z[8:-4]), want):
            return name
    return None


def hybrida_export(src: Path) -> Path:
    """Export a saved part with the ``hybrida export`` command (in-process) to TorchScript float64, beside it."""
    from hybrida.cli import app

    app(["export", str(src), "--format", "torchscript", "--dtype", "float64"], standalone_mode=False)
    return default_out(src, "torchscript")


def train_corrections(out: Path, epochs: int, lr: float, fused: bool) -> dict[str, dict[str, float]]:
    """Fit, save, reload and export both kinds of correction; write their 1000-step Python trajectories."""
    truth = Lorenz96Cubic(N, F=8.5, gamma=0.04, dt=DT)
    with torch.no_grad():
        run = truth.forecast(truth.forecast(truth.initial_state(), 200), 700, trajectory=True)
    train, test = run[:500], run[500:]
    physics = Lorenz96(N, F, DT)
    skill = {}
    for kind, code in KINDS.items():
        net = PolyConv(degree=3, kernel_size=3)  # starts at g = 0: all it knows comes from the fit
        hyb, _ = fit_correction(physics, net, train, kind=kind, in_mean=0.0, in_std=4.0, epochs=epochs,
                                batch_size=100, lr=lr, patience=30, seed=0, progress=False)
        cfg = {"truth": repr(truth), "train_states": 500, "epochs": epochs, "lr": lr, "seed": 0}
        src = save_correction(out / f"correction_{kind}.pt", hyb, cfg)
        hybrida_export(src)
        model = load_correction(src, Lorenz96(N, F, DT))  # what a user of the file gets
        with torch.no_grad():
            phys_err = float(correction_targets(physics, test).pow(2).mean().sqrt())
            hyb_err = float((test[1:] - model.forecast(test[:-1], 1)).pow(2).mean().sqrt())
            traj = model.forecast(test[0], STEPS, trajectory=True)  # (STEPS + 1, n), one member
        skill[kind] = {"physics_rmse": phys_err, "hybrid_rmse": hyb_err}
        head = _i8(TRAJ_MAGIC, N, STEPS, code, int(fused)) + _f8(torch.tensor([F, DT], dtype=torch.float64))
        (out / f"reference_{kind}.bin").write_bytes(head + _f8(traj))
    return skill


def train_surrogate(out: Path, epochs: int, lr: float) -> dict[str, float]:
    """Fit a small ResidualCNN surrogate of L96, export it, write its Python trajectory and TL/adjoint products."""
    l96 = Lorenz96(N, F, DT)
    with torch.no_grad():
        run = l96.forecast(l96.initial_state(spinup_steps=300), 500, trajectory=True)
        test = l96.forecast(run[-1], 100, trajectory=True)
    net = ResidualCNN(channels=8, blocks=1, kernel_size=5, activation="tanh", seed=0).double()
    model = SurrogateModel.from_trajectory(net, run[:400], DT, "rk4")
    fit(model, run[:400], run[400:], epochs=epochs, batch_size=64, lr=lr, seed=0, progress=False)
    src = save_surrogate(out / "surrogate.pt", model, {"epochs": epochs, "lr": lr, "train_states": 400, "seed": 0})
    hybrida_export(src)
    model = load_surrogate(src)
    g = torch.Generator().manual_seed(18)
    x, dx, dy = test[-1], torch.randn(N, generator=g, dtype=torch.float64), torch.randn(N, generator=g, dtype=torch.float64)
    _, mdx = torch.func.jvp(model.step, (x,), (dx,))
    _, vjp = torch.func.vjp(model.step, x)
    (mtdy,) = vjp(dy)
    with torch.no_grad():
        traj = model.forecast(x, SURROGATE_STEPS, trajectory=True)
        skill = {"surrogate_rmse": float((model.forecast(test[:-1], 1) - test[1:]).pow(2).mean().sqrt()),
                 "persistence_rmse": float((test[:-1] - test[1:]).pow(2).mean().sqrt())}
    head = _i8(SURR_MAGIC, N, SURROGATE_STEPS)
    (out / "surrogate_reference.bin").write_bytes(head + b"".join(_f8(v) for v in (x, dx, dy, mdx, mtdy, traj)))
    return skill


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr-scale", type=float, default=1.0,
                   help="factor on the learning rates (correction 2e-2, surrogate 1e-2); 1e-12 disables training")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    arithmetic = l96_arithmetic()
    skill = train_corrections(args.out, args.epochs, 2e-2 * args.lr_scale, arithmetic != "unfused")
    surrogate = train_surrogate(args.out, max(1, args.epochs // 2), 1e-2 * args.lr_scale)
    info = {"l96_arithmetic": arithmetic, "skill": skill, "surrogate": surrogate}
    (args.out / "reference.json").write_text(json.dumps(info, indent=2))
    for kind, s in skill.items():
        print(f"correction {kind}: one-step RMSE vs truth {s['physics_rmse']:.4f} (physics) -> {s['hybrid_rmse']:.4f} (hybrid)")
    print(f"surrogate: one-step RMSE vs L96 {surrogate['surrogate_rmse']:.4f} (persistence {surrogate['persistence_rmse']:.4f})")
    print(f"torch's L96 step uses {arithmetic or 'neither fused nor unfused'} multiply-adds (the hosts follow)")
    if arithmetic is None:
        print("warning: torch's L96 step is neither the fused nor the unfused multiply-add arithmetic of the hosts; "
              "their trajectories will differ from Python's by more than round-off", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
