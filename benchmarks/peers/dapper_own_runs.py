"""DAPPER's own full-length runs of a published row, to compare its seed spread with hybrida's.

Run inside the DAPPER venv that ``dapper_compare.py`` builds (``benchmarks/.dapper-venv``):

    OMP_NUM_THREADS=1 benchmarks/.dapper-venv/bin/python benchmarks/peers/dapper_own_runs.py ROW SEED [SEED ...]

Prints, per seed, the time-mean analysis RMSE of DAPPER's method on DAPPER's own setup, truth
and observations simulated by DAPPER from seed SEED (``dapper.tools.seeding.set_seed``). ROW is one of

* ``ks-etkf``: ``EnKF('Sqrt', N=20, infl=1.03, rot=True)`` on ``KS/bocquet2019`` (2*10^4 cycles);
* ``ks-letkf``: ``LETKF(N=6, loc_rad=25/1.82, infl=1.06, rot=True)`` on ``KS/bocquet2019``;
* ``l63-etkf``: ``EnKF('Sqrt', N=10, infl=1.02, rot=True)`` on ``Lorenz63/sakov2012`` (1000 cycles).
"""

from __future__ import annotations

import sys

import numpy as np
from dapper_side_common import import_dapper

ROWS = ("ks-etkf", "ks-letkf", "l63-etkf")


def main(which: str, seed: int) -> float:
    _, da, _ = import_dapper()
    from dapper.tools.seeding import set_seed

    if which == "l63-etkf":
        from dapper.mods.Lorenz63.sakov2012 import HMM

        xp = da.EnKF("Sqrt", N=10, infl=1.02, rot=True)
    else:
        from dapper.mods.KS.bocquet2019 import HMM

        if which == "ks-etkf":
            xp = da.EnKF("Sqrt", N=20, infl=1.03, rot=True)
        else:
            xp = da.LETKF(N=6, loc_rad=25 / 1.82, infl=1.06, rot=True, taper="GC")
    # DAPPER 1.8 draws from its own generator (dapper.tools.seeding.rng), not from np.random:
    # without set_seed a run is not reproducible from its seed
    set_seed(seed)
    np.random.seed(seed)
    xx, yy = HMM.copy().simulate()
    xp.assimilate(HMM, xx, yy, liveplots=False)
    xp.stats.average_in_time()
    return float(xp.avrgs.err.rms.a.val)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ROWS:
        sys.exit(f"usage: dapper_own_runs.py {{{','.join(ROWS)}}} SEED [SEED ...]")
    for s in sys.argv[2:]:
        print(sys.argv[1], s, round(main(sys.argv[1], int(s)), 3), flush=True)
