"""Fit and apply the two cut-points (low, high) of the ensemble score.

score < low -> good; low <= score < high -> uncertain; score >= high -> poor (DESIGN.md).

Methods:
- ``quantile``: cut-points at the score quantiles that give target shares of good / uncertain /
  poor (default 0.60 / 0.15 / 0.25, the DoMore paper's order of magnitude);
- ``survival``: the pair of cut-points whose three groups best separate the outcomes (largest
  3-group log-rank statistic, i.e. the Cox score test), every group holding at least
  ``min_share`` of the cohort, optionally with the groups' hazards in score order;
- ``fixed``: given values, checked.

Bootstrap percentile intervals of the cut-points (refit on resampled subjects) travel with the
result so the calibration record says how stable the thresholds are.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from wsi_prognosis.calibration.logrank import pairwise_logrank_statistics
from wsi_prognosis.errors import ConfigurationError

log = logging.getLogger(__name__)

RISK_GROUPS = ("good", "uncertain", "poor")
METHODS = ("quantile", "survival", "fixed")
DEFAULT_SHARES: Mapping[str, float] = {"good": 0.60, "uncertain": 0.15, "poor": 0.25}


@dataclass(frozen=True)
class Thresholds:
    """Two fitted cut-points and how they were obtained (the calibration record's core)."""

    low: float
    high: float
    method: str
    n: int = 0
    shares: dict[str, float] = field(default_factory=dict)   # observed shares on the fitting data
    ci: dict[str, Any] | None = None                         # {"low": [lo, hi], "high": [lo, hi], "level", "n_bootstrap"}
    details: dict[str, Any] = field(default_factory=dict)    # method parameters and criterion values

    def as_bundle(self) -> dict[str, float]:
        """The `thresholds` entry of bundle.json."""
        return {"low": float(self.low), "high": float(self.high)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _low_high(thresholds: Thresholds | Mapping[str, float]) -> tuple[float, float]:
    if isinstance(thresholds, Thresholds):
        return thresholds.low, thresholds.high
    try:
        return float(thresholds["low"]), float(thresholds["high"])
    except (KeyError, TypeError) as exc:
        raise ConfigurationError(f"thresholds {thresholds!r} need numeric 'low' and 'high'.") from exc


def assign_risk_group(score: float, thresholds: Thresholds | Mapping[str, float]) -> str:
    """'good' | 'uncertain' | 'poor' for one score. Raises ValueError for NaN."""
    low, high = _low_high(thresholds)
    if score is None or math.isnan(float(score)):
        raise ValueError("cannot assign a risk group to a missing (NaN) score")
    if score < low:
        return "good"
    return "uncertain" if score < high else "poor"


def assign_risk_groups(scores: Sequence[float] | np.ndarray, thresholds: Thresholds | Mapping[str, float] | None) -> np.ndarray:
    """Vectorised `assign_risk_group`: object array; '' where the score is NaN or no thresholds."""
    values = np.asarray(scores, dtype=float)
    out = np.full(values.shape, "", dtype=object)
    if thresholds is None:
        return out
    low, high = _low_high(thresholds)
    ok = ~np.isnan(values)
    out[ok & (values < low)] = "good"
    out[ok & (values >= low) & (values < high)] = "uncertain"
    out[ok & (values >= high)] = "poor"
    return out


def group_shares(scores: Sequence[float] | np.ndarray, low: float, high: float) -> dict[str, float]:
    """Share of non-NaN scores in each risk group."""
    groups = assign_risk_groups(scores, {"low": low, "high": high})
    groups = groups[groups != ""]
    n = max(len(groups), 1)
    return {g: float((groups == g).sum() / n) for g in RISK_GROUPS}


def _check_shares(shares: Mapping[str, float]) -> tuple[float, float, float]:
    try:
        good, uncertain, poor = (float(shares[g]) for g in RISK_GROUPS)
    except KeyError as exc:
        raise ConfigurationError(f"calibration shares {dict(shares)} need keys {list(RISK_GROUPS)}.") from exc
    if min(good, uncertain, poor) < 0 or abs(good + uncertain + poor - 1.0) > 1e-6 or good == 0 or poor == 0:
        raise ConfigurationError(
            f"calibration shares {dict(shares)} must be >= 0, with good and poor > 0, and sum to 1. "
            "Fix: e.g. shares={good: 0.6, uncertain: 0.15, poor: 0.25}."
        )
    return good, uncertain, poor


def _cut_at_rank(sorted_scores: np.ndarray, k: int) -> float:
    """A cut that puts exactly the k lowest scores below it (midpoint between neighbours)."""
    n = len(sorted_scores)
    if k <= 0:
        return float(sorted_scores[0])
    if k >= n:
        return float(np.nextafter(sorted_scores[-1], np.inf))
    return float((sorted_scores[k - 1] + sorted_scores[k]) / 2.0)


def _fit_quantile(scores: np.ndarray, shares: Mapping[str, float]) -> tuple[float, float, dict[str, Any]]:
    good, uncertain, _ = _check_shares(shares)
    s = np.sort(scores)
    n = len(s)
    k_low = int(round(good * n))
    k_high = max(int(round((good + uncertain) * n)), k_low)
    low = _cut_at_rank(s, k_low)
    high = _cut_at_rank(s, k_high)
    if high <= low:  # an empty uncertain group: keep low < high as the bundle contract requires
        high = float(np.nextafter(low, np.inf))
    return low, high, {"target_shares": {g: float(shares[g]) for g in RISK_GROUPS}}


def _candidate_cuts(scores: np.ndarray, min_share: float, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut values at rank positions from min_share to 1 - min_share, and how many scores fall below."""
    s = np.sort(scores)
    n = len(s)
    ranks = np.unique(np.round(np.linspace(min_share, 1 - min_share, grid) * n).astype(int))
    ranks = ranks[(ranks > 0) & (ranks < n)]
    cuts = np.unique([_cut_at_rank(s, int(k)) for k in ranks])
    below = np.searchsorted(s, cuts, side="left")
    return cuts, below


def _fit_survival(
    scores: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    *,
    min_share: float,
    grid: int,
    require_order: bool,
) -> tuple[float, float, dict[str, Any]]:
    if not 0 < min_share < 1 / 3:
        raise ConfigurationError(f"calibration min_share={min_share} must lie in (0, 1/3).")
    if int(np.sum(event)) < 2:
        raise ConfigurationError(
            f"the survival method needs events in the tuning cohort; found {int(np.sum(event))}. "
            "Fix: use method=quantile or a cohort with events."
        )
    n = len(scores)
    cuts, below = _candidate_cuts(scores, min_share, grid)
    a, b = np.triu_indices(len(cuts), k=1)
    shares = np.stack([below[a], below[b] - below[a], n - below[b]], axis=1) / n
    keep = (shares >= min_share - 1e-12).all(axis=1)
    if not keep.any():
        raise ConfigurationError(
            f"no pair of cut-points leaves every group >= {min_share:.0%} of {n} subjects. Fix: lower min_share."
        )
    pairs = np.stack([a[keep], b[keep]], axis=1)
    stat, ratio = pairwise_logrank_statistics(scores, time, event, cuts, pairs)
    ordered = np.nan_to_num(ratio[:, 0], nan=np.inf) < np.nan_to_num(ratio[:, 1], nan=-np.inf)
    ordered &= np.nan_to_num(ratio[:, 1], nan=np.inf) < np.nan_to_num(ratio[:, 2], nan=-np.inf)
    order_met = True
    candidates = stat.copy()
    if require_order:
        if ordered.any():
            candidates = np.where(ordered, stat, -np.inf)
        else:
            order_met = False
            log.warning("no cut-point pair orders the groups' hazards good < uncertain < poor; using the best unordered pair")
    best = int(np.argmax(candidates))
    low, high = float(cuts[pairs[best, 0]]), float(cuts[pairs[best, 1]])
    details = {
        "criterion": "logrank",
        "statistic": float(stat[best]),
        "observed_over_expected": {g: float(r) for g, r in zip(RISK_GROUPS, ratio[best])},
        "min_share": float(min_share),
        "grid": int(grid),
        "pairs_searched": int(len(pairs)),
        "require_order": bool(require_order),
        "order_met": bool(order_met),
    }
    return low, high, details


def fit_thresholds(
    scores: Sequence[float] | np.ndarray,
    time: Sequence[float] | np.ndarray | None = None,
    event: Sequence[int] | np.ndarray | None = None,
    method: str = "quantile",
    *,
    shares: Mapping[str, float] = DEFAULT_SHARES,
    min_share: float = 0.10,
    grid: int = 50,
    require_order: bool = True,
    low: float | None = None,
    high: float | None = None,
    n_bootstrap: int = 200,
    ci_level: float = 0.95,
    seed: int = 0,
) -> Thresholds:
    """Fit (low, high) on one cohort's scores (and outcomes for ``survival``).

    scores : (n,) ensemble scores in [0, 1], higher = worse; time : (n,) follow-up; event : (n,)
    1 = endpoint. NaN scores are dropped (with their outcomes). ``n_bootstrap=0`` skips the CIs.
    """
    if method not in METHODS:
        raise ConfigurationError(f"calibration method {method!r} unknown. Fix: one of {list(METHODS)}.")
    s = np.asarray(scores, dtype=float)
    ok = ~np.isnan(s)
    t = e = None
    if method == "survival":
        if time is None or event is None:
            raise ConfigurationError("method=survival needs time and event for every score (the clinical table).")
        t = np.asarray(time, dtype=float)
        e = np.asarray(event, dtype=int)
        ok &= ~np.isnan(t)
    s = s[ok]
    if t is not None and e is not None:
        t, e = t[ok], e[ok]
    if method == "fixed":
        if low is None or high is None or not 0.0 <= float(low) < float(high) <= 1.0:
            raise ConfigurationError(
                f"method=fixed needs 0 <= low < high <= 1; got low={low}, high={high}. Fix: calibration.low=.. calibration.high=.."
            )
        lo, hi = float(low), float(high)
        return Thresholds(lo, hi, "fixed", n=len(s), shares=group_shares(s, lo, hi) if len(s) else {}, details={})
    if len(s) < 3:
        raise ConfigurationError(f"calibration needs at least 3 scored subjects; got {len(s)}.")

    def fit_once(sc: np.ndarray, ti: np.ndarray | None, ev: np.ndarray | None) -> tuple[float, float, dict[str, Any]]:
        if method == "quantile":
            return _fit_quantile(sc, shares)
        assert ti is not None and ev is not None
        return _fit_survival(sc, ti, ev, min_share=min_share, grid=grid, require_order=require_order)

    lo, hi, details = fit_once(s, t, e)
    ci = None
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        lows, highs = [], []
        for _ in range(n_bootstrap):
            idx = rng.integers(0, len(s), len(s))
            try:
                bl, bh, _ = fit_once(s[idx], None if t is None else t[idx], None if e is None else e[idx])
            except ConfigurationError:
                continue  # e.g. a resample without events
            lows.append(bl)
            highs.append(bh)
        if lows:
            alpha = (1 - ci_level) / 2
            ci = {
                "low": [float(np.quantile(lows, alpha)), float(np.quantile(lows, 1 - alpha))],
                "high": [float(np.quantile(highs, alpha)), float(np.quantile(highs, 1 - alpha))],
                "level": float(ci_level),
                "n_bootstrap": int(len(lows)),
                "seed": int(seed),
            }
    return Thresholds(lo, hi, method, n=len(s), shares=group_shares(s, lo, hi), ci=ci, details=details)
