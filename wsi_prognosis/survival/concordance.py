"""THE one place the C-index is computed in this project, with the sign handled here.

Convention: `risk` is a risk score — higher means worse (earlier endpoint), like the model score.
lifelines' `concordance_index` expects the opposite (a predicted survival time, higher = longer),
so we pass `-risk`. A risk score that ranks patients perfectly gives 1.0, a random one 0.5, a
perfectly inverted one 0.0. Ties in risk count 1/2 (Harrell's C).
Every other module (training metrics, calibration, notebooks) calls `concordance` from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from lifelines.utils import concordance_index


def concordance(time, event, risk) -> float:
    """Harrell's C-index of `risk` (higher = worse) for right-censored `time`, `event` (1 = endpoint).

    Returns NaN when no pair is comparable (e.g. no events).

    >>> concordance([1, 2, 3], [1, 1, 1], [3, 2, 1])  # highest risk died first
    1.0
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=int)
    risk = np.asarray(risk, dtype=float)
    if event.sum() == 0 or len(time) < 2:
        return float("nan")
    try:
        return float(concordance_index(time, -risk, event))
    except ZeroDivisionError:  # lifelines: "No admissable pairs in the dataset."
        return float("nan")


@dataclass(frozen=True)
class BootstrapEstimate:
    """A point estimate with a percentile bootstrap CI; `reason` says why a value is missing."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_boot: int
    reason: str | None = None

    def as_dict(self) -> dict:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "n_boot": self.n_boot, "reason": self.reason}


_MATRIX_MAX_N = 4000  # pair matrices of n x n float32: 64 MB each at this size


def _pair_matrices(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Harrell's pairs exactly as lifelines counts them, as matrices for weighted (bootstrap) sums.

    comparable[i, j]: i had the endpoint first (t_i < t_j, or t_i == t_j with j censored).
    concordant[i, j]: 1 if risk_i > risk_j, 1/2 on a risk tie, for comparable pairs.
    A bootstrap sample with multiplicities w then has C = w'Kw / w'Pw (tested against lifelines).
    """
    dead = event[:, None] == 1
    later = (time[None, :] > time[:, None]) | ((time[None, :] == time[:, None]) & (event[None, :] == 0))
    comparable = (dead & later).astype(np.float32)
    score = np.where(risk[:, None] > risk[None, :], 1.0, np.where(risk[:, None] == risk[None, :], 0.5, 0.0))
    return comparable, (score * comparable).astype(np.float32)


def _bootstrap_c(time, event, risks: list[np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, len(risks)) bootstrap C-indices; the same resamples for every risk (paired)."""
    rng = np.random.default_rng(seed)
    n = len(time)
    out = np.full((max(n_boot, 0), len(risks)), np.nan)
    if n_boot <= 0:
        return out
    if n <= _MATRIX_MAX_N:
        weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)]).astype(np.float32)
        for k, risk in enumerate(risks):
            comparable, concordant = _pair_matrices(time, event, risk)
            with np.errstate(invalid="ignore", divide="ignore"):
                num = np.einsum("bi,bi->b", weights @ concordant, weights, dtype=np.float64)
                den = np.einsum("bi,bi->b", weights @ comparable, weights, dtype=np.float64)
                out[:, k] = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
        return out
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        out[b] = [concordance(time[idx], event[idx], r[idx]) for r in risks]
    return out


def _percentile_ci(samples: np.ndarray, n_boot: int, alpha: float) -> tuple[float | None, float | None, str | None]:
    samples = samples[np.isfinite(samples)]
    if n_boot <= 0:
        return None, None, "bootstrap disabled (analysis.bootstrap.n = 0)"
    if samples.size < 0.9 * n_boot:
        return None, None, f"only {samples.size} of {n_boot} bootstrap samples had comparable pairs"
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high), None


def concordance_ci(time, event, risk, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> BootstrapEstimate:
    """C-index with a percentile bootstrap (1 - alpha) CI, resampling patients with replacement."""
    time, event, risk = (np.asarray(a, dtype=float) for a in (time, event, risk))
    value = concordance(time, event, risk)
    if not np.isfinite(value):
        return BootstrapEstimate(None, None, None, n_boot, "no comparable pairs (no events or fewer than 2 patients)")
    samples = _bootstrap_c(time, event, [risk], n_boot, seed)[:, 0]
    low, high, reason = _percentile_ci(samples, n_boot, alpha)
    return BootstrapEstimate(value, low, high, n_boot, reason)


def concordance_difference(
    time, event, risk, reference_risk, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> BootstrapEstimate:
    """C(risk) - C(reference_risk) on the same patients, with a paired bootstrap CI.

    Both are risk scores (higher = worse). Patients with a missing reference are left out of
    both, so the two C-indices are always compared on identical patients.
    """
    time, event, risk, ref = (np.asarray(a, dtype=float) for a in (time, event, risk, reference_risk))
    keep = np.isfinite(ref) & np.isfinite(risk)
    time, event, risk, ref = time[keep], event[keep], risk[keep], ref[keep]
    value = concordance(time, event, risk) - concordance(time, event, ref)
    if not np.isfinite(value):
        return BootstrapEstimate(None, None, None, n_boot, "no comparable pairs (no events or fewer than 2 patients)")
    both = _bootstrap_c(time, event, [risk, ref], n_boot, seed)
    samples = both[:, 0] - both[:, 1]
    low, high, reason = _percentile_ci(samples, n_boot, alpha)
    return BootstrapEstimate(value, low, high, n_boot, reason)
