"""Scores of the ENSO case without a truth: innovation checks, forecast skill vs persistence, independent checks.

Forecast skill against later observations (WMO SVS-LRF practice): the
anomaly correlation of the ensemble-mean forecast with the observed anomaly,
its RMSE, the ensemble CRPS (Gneiting & Raftery 2007) and the spread/skill
ratio sqrt(spread² + σ_o²) / RMSE (observation error added to the spread,
Candille & Talagrand 2008), each against persistence of the observed anomaly
at the initial month. Innovation checks follow Desroziers et al. (2005) and
the usual consistency tests: mean O−B ≈ 0, normalised variance
E[d²/(HBHᵀ + R)] ≈ 1, little lag-1 autocorrelation of the normalised
innovations (a white innovation sequence, Mehra 1970), rms O−A < rms O−B.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hybrida.metrics import crps_ensemble

__all__ = ["forecast_skill", "h_leads_t", "independent_checks", "innovation_checks", "period_mask"]


def period_mask(years: np.ndarray, first: int, last: int) -> np.ndarray:
    """Months whose calendar year lies in [first, last]."""
    return (years >= first) & (years <= last)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return math.nan
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def innovation_checks(
    omb: np.ndarray, oma: np.ndarray, hbh: np.ndarray, r: np.ndarray, mask: np.ndarray
) -> dict[str, float]:
    """Consistency of the innovations of the months in ``mask`` (one observation per month).

    ``normalised_variance`` = mean d_ob²/(HBHᵀ + R) (target 0.8-1.2),
    ``lag1_autocorr`` of the normalised innovations d_ob/sqrt(HBHᵀ + R),
    Desroziers σ_o = sqrt(mean d_oa d_ob) (Desroziers et al. 2005, eq. 3)
    and σ_b = sqrt(mean (d_ob − d_oa) d_ob).
    """
    ok = mask & np.isfinite(omb) & np.isfinite(oma)
    d, a, s = omb[ok], oma[ok], hbh[ok] + r[ok]
    z = d / np.sqrt(s)
    zz = np.where(mask & np.isfinite(omb), omb / np.sqrt(hbh + r), np.nan)
    lag1 = _corr(zz[:-1], zz[1:])
    oa_ob, ab_ob = float(np.mean(a * d)), float(np.mean((d - a) * d))
    return {
        "n": int(ok.sum()),
        "omb_mean": float(d.mean()),
        "omb_mean_over_se": float(d.mean() / (d.std() / math.sqrt(d.size))),
        "omb_rms": float(np.sqrt(np.mean(d * d))),
        "oma_rms": float(np.sqrt(np.mean(a * a))),
        "normalised_variance": float(np.mean(z * z)),
        "lag1_autocorr": lag1,
        "desroziers_sigma_o": math.sqrt(oa_ob) if oa_ob >= 0 else math.nan,
        "desroziers_sigma_b": math.sqrt(ab_ob) if ab_ob >= 0 else math.nan,
        "sigma_o_assumed": float(np.sqrt(np.mean(r[ok]))),
        "hbh_rms": float(np.sqrt(np.mean(hbh[ok]))),
    }


def forecast_skill(
    members: np.ndarray, obs: np.ndarray, init_mask: np.ndarray, obs_std: float
) -> dict[str, list[float]]:
    """Skill per lead of ensemble forecasts ``members`` ``(K, L, N)`` of T started at months ``init_mask``.

    ``members[k, l - 1]`` is the forecast from the analysis of month k valid
    at month k + l, scored against ``obs[k + l]`` where it exists. Returns
    lists over leads 1..L: ``acc``, ``rmse``, ``crps``, ``spread_skill``,
    ``persistence_acc``, ``persistence_rmse`` and ``n``.
    """
    K, L, _ = members.shape
    out: dict[str, list[float]] = {k: [] for k in
                                   ("acc", "rmse", "crps", "spread_skill", "persistence_acc",
                                    "persistence_rmse", "n")}
    for lead in range(1, L + 1):
        init = np.flatnonzero(init_mask[: K - lead] if K > lead else np.zeros(0, bool))
        target = obs[init + lead]
        ok = np.isfinite(target) & np.isfinite(obs[init])
        init, target = init[ok], target[ok]
        ens = members[init, lead - 1]
        mean = ens.mean(-1)
        pers = obs[init]
        rmse = float(np.sqrt(np.mean((mean - target) ** 2))) if init.size else math.nan
        spread2 = float(np.mean(ens.var(-1, ddof=1))) if init.size else math.nan
        crps = crps_ensemble(torch.as_tensor(ens).unsqueeze(-1), torch.as_tensor(target).unsqueeze(-1))
        out["acc"].append(_corr(mean, target))
        out["rmse"].append(rmse)
        out["crps"].append(float(crps.mean()) if init.size else math.nan)
        out["spread_skill"].append(math.sqrt(spread2 + obs_std**2) / rmse if init.size else math.nan)
        out["persistence_acc"].append(_corr(pers, target))
        out["persistence_rmse"].append(float(np.sqrt(np.mean((pers - target) ** 2))) if init.size else math.nan)
        out["n"].append(int(init.size))
    return out


def h_leads_t(h: np.ndarray, T: np.ndarray, mask: np.ndarray, max_lag: int = 24) -> tuple[int, float]:
    """The lag (months) maximising corr(h(t), T(t + lag)) over t in ``mask``, and that correlation."""
    best = (0, -math.inf)
    idx = np.flatnonzero(mask)
    for lag in range(max_lag + 1):
        i = idx[idx + lag < T.size]
        c = _corr(h[i], T[i + lag])
        if math.isfinite(c) and c > best[1]:
            best = (lag, c)
    return best


def independent_checks(
    T_a: np.ndarray, h_a: np.ndarray, table: dict[str, np.ndarray], mask: np.ndarray
) -> dict[str, float]:
    """Analysed T against the Niño-3.4 and Niño-4 anomalies (not assimilated), and the h-T lead."""
    out: dict[str, float] = {}
    for name in ("nino34", "nino4"):
        ref = table[name]
        out[f"corr_T_{name}"] = _corr(T_a[mask], ref[mask])
        out[f"rmse_T_{name}"] = float(np.sqrt(np.nanmean((T_a[mask] - ref[mask]) ** 2)))
        out[f"corr_obs_nino3_{name}"] = _corr(table["nino3"][mask], ref[mask])
    lag, c = h_leads_t(h_a, T_a, mask)
    out["h_leads_T_months"] = lag
    out["h_leads_T_corr"] = c
    out["corr_h_T_lag0"] = _corr(h_a[mask], T_a[mask])
    return out
