"""DAPPER's own full-length KS (Bocquet et al. 2019) runs, to compare seed spread with hybrida's.

Run inside the DAPPER venv that ``dapper_compare.py`` builds:

    OMP_NUM_THREADS=1 benchmarks/.dapper-venv/bin/python benchmarks/peers/dapper_ks_long.py SEED etkf|letkf

Prints the time-mean analysis RMSE of DAPPER's ``EnKF('Sqrt', N=20, infl=1.03,
rot=True)`` or ``LETKF(N=6, loc_rad=25/1.82, infl=1.06, rot=True)`` on the
``KS/bocquet2019`` setup (2*10^4 cycles), truth and observations simulated by
DAPPER from numpy seed SEED.
"""

from __future__ import annotations

import sys

import numpy as np


def main(seed: int, which: str) -> float:
    import dapper.da_methods as da
    from dapper.mods.KS.bocquet2019 import HMM

    if which == "etkf":
        xp = da.EnKF("Sqrt", N=20, infl=1.03, rot=True)
    else:
        xp = da.LETKF(N=6, loc_rad=25 / 1.82, infl=1.06, rot=True, taper="GC")
    np.random.seed(seed)
    xx, yy = HMM.copy().simulate()
    xp.assimilate(HMM, xx, yy, liveplots=False)
    xp.stats.average_in_time()
    return float(xp.avrgs.err.rms.a.val)


if __name__ == "__main__":
    seed, which = int(sys.argv[1]), sys.argv[2]
    print(which, seed, round(main(seed, which), 3))
