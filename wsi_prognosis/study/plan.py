"""How many events, patients and cohorts an external validation needs (Kleppe et al., Nat Rev Cancer 2021).

Closed forms (two-sided alpha, power 1 - beta, p and q the shares of the two compared groups among
the patients in them, so p + q = 1):

- events needed (Schoenfeld 1983):  D = (z_{1-alpha/2} + z_{1-beta})² / (p q (ln HR)²)
  — HR 2, alpha 0.05, p = q = 1/2: 66 events at 80 % power, 88 at 90 %.
- power of D events:                1 - beta = Phi(sqrt(D p q) |ln HR| - z_{1-alpha/2})
- smallest detectable HR:           exp((z_{1-alpha/2} + z_{1-beta}) / sqrt(D p q))
- patients needed:                  D / pi / s, with pi the probability of an event by the
  horizon in the compared groups (Kaplan–Meier on a reference cohort) and s the share of all
  patients that fall into the two compared groups (the uncertain group adds patients, not events
  to this comparison). It assumes every patient is followed to the horizon or the event.
- cohorts needed: the smallest k >= 3 for which the random-effects (1 - alpha) prediction
  interval of a new cohort's log HR excludes 0 when k cohorts, each with the per-cohort standard
  error s_c = 1 / sqrt(D p q) of the planned size, estimate the expected ln HR with between-cohort
  variance tau² (Higgins, Thompson & Spiegelhalter 2009):
      ln HR - t_{k-2, 1-alpha/2} sqrt(tau² + (s_c² + tau²) / k) > 0
  With tau² >= (ln HR / z_{1-alpha/2})² no number of cohorts suffices (None).

The empirical power curve resamples a reference cohort's patients (score, time, event) at each
size, applies the locked thresholds and fits the primary Cox model (risk groups, good as
reference, Breslow ties) to every resample at once (`cox_groups_batched`, Newton–Raphson on
frequency weights); the C-index of the score comes from the pair matrices of
`survival.concordance` (C = w'Kw / w'Pw for multiplicities w).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from wsi_prognosis.errors import ConfigurationError

RISK_GROUPS = ("good", "uncertain", "poor")


def _check_hr(hr: float) -> float:
    try:
        hr = float(hr)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"hr={hr!r}: not a number. Fix: the hazard ratio to detect, e.g. hr=2.0.") from exc
    if not math.isfinite(hr) or hr <= 0 or hr == 1:
        raise ConfigurationError(
            f"hr={hr}: a hazard ratio to detect must be > 0 and not 1 (HR 1 is no effect). Fix: e.g. hr=2.0 (or 0.5).")
    return hr


def _check_prob(value: float, key: str, example: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{key}={value!r}: not a number. Fix: e.g. {key}={example}.") from exc
    if not 0 < value < 1:
        raise ConfigurationError(f"{key}={value}: must lie strictly between 0 and 1. Fix: e.g. {key}={example}.")
    return value


def _check_share(share: float) -> float:
    try:
        share = float(share)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"share={share!r}: not a number.") from exc
    if not 0 < share < 1:
        raise ConfigurationError(
            f"group share {share}: each compared group needs a share between 0 and 1 (a group with share 0 has no "
            "patients to compare). Fix: shares={good: 0.6, poor: 0.25} or recalibrate the bundle.")
    return share


def schoenfeld_events(hr: float, alpha: float = 0.05, power: float = 0.9, share: float = 0.5) -> int:
    """Events needed to detect `hr` between two groups (Schoenfeld), rounded up.

    share: p, the share of one compared group among the patients in the two groups.

    >>> schoenfeld_events(2.0, 0.05, 0.8), schoenfeld_events(2.0, 0.05, 0.9)
    (66, 88)
    """
    hr, alpha, power, p = _check_hr(hr), _check_prob(alpha, "alpha", "0.05"), _check_prob(power, "power", "0.9"), _check_share(share)
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return int(math.ceil(z * z / (p * (1 - p) * math.log(hr) ** 2) - 1e-9))


def power_for_events(events: float, hr: float, alpha: float = 0.05, share: float = 0.5) -> float:
    """Power of a two-sided Cox/log-rank test with `events` events to detect `hr` (Schoenfeld)."""
    hr, alpha, p = _check_hr(hr), _check_prob(alpha, "alpha", "0.05"), _check_share(share)
    if events <= 0:
        raise ConfigurationError(f"events={events}: need at least one event.")
    return float(stats.norm.cdf(math.sqrt(events * p * (1 - p)) * abs(math.log(hr)) - stats.norm.ppf(1 - alpha / 2)))


def detectable_hr(events: float, alpha: float = 0.05, power: float = 0.9, share: float = 0.5) -> float:
    """The smallest HR (> 1) that `events` events detect with the given power (Schoenfeld)."""
    alpha, power, p = _check_prob(alpha, "alpha", "0.05"), _check_prob(power, "power", "0.9"), _check_share(share)
    if events <= 0:
        raise ConfigurationError(f"events={events}: need at least one event.")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(math.exp(z / math.sqrt(events * p * (1 - p))))


def cohorts_needed(hr: float, se_cohort: float, tau2: float, alpha: float = 0.05, max_k: int = 100) -> int | None:
    """Smallest k >= 3 whose random-effects prediction interval for a new cohort excludes HR 1.

    ln HR - t_{k-2, 1-alpha/2} * sqrt(tau2 + (se_cohort² + tau2) / k) > 0 (Higgins et al. 2009;
    the pooled estimate's variance for k equal cohorts is (se_cohort² + tau2) / k). None when no
    k <= max_k suffices.
    """
    hr, alpha = _check_hr(hr), _check_prob(alpha, "alpha", "0.05")
    if tau2 < 0 or se_cohort <= 0:
        raise ConfigurationError(f"tau2={tau2}, se={se_cohort}: need tau2 >= 0 and a positive per-cohort SE.")
    effect = abs(math.log(hr))
    for k in range(3, max_k + 1):
        if effect - stats.t.ppf(1 - alpha / 2, k - 2) * math.sqrt(tau2 + (se_cohort ** 2 + tau2) / k) > 0:
            return k
    return None


def event_probability(time, event, horizon: float) -> float:
    """1 - S(horizon), Kaplan–Meier; ConfigurationError without events or follow-up to the horizon."""
    from wsi_prognosis.survival.landmarks import km_at

    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=int)
    if len(time) == 0 or event.sum() == 0:
        raise ConfigurationError(
            f"the reference cohort has {len(time)} patient(s) in the compared groups and no events: the event rate "
            "cannot be estimated. Fix: a reference cohort with events (e.g. tuning) or give event_probability=.")
    entry = km_at(time, event, float(horizon))
    if entry["survival"] is None:
        raise ConfigurationError(
            f"horizon={horizon:g}: the reference cohort is not followed that long ({entry['reason']}). "
            "Fix: a shorter horizon= or give event_probability=.")
    return 1.0 - entry["survival"]


# ----------------------------------------------------------------------------------------------
# Empirical power curve: every resample at once


def _revcum_at(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Sum over the risk set {j: t_j >= t_i} for each i (rows: resamples; columns sorted by time)."""
    return np.flip(np.cumsum(np.flip(values, axis=-1), axis=-1), axis=-1)[..., first]


def cox_groups_batched(time, event, x: np.ndarray, weights: np.ndarray, *, alpha: float = 0.05,
                       max_iter: int = 30, tol: float = 1e-9) -> dict[str, np.ndarray]:
    """Cox models with covariates `x` (N, K) fitted to many frequency-weighted samples at once.

    weights: (B, N) multiplicities (a resample of the N patients). Breslow's handling of tied times
    (a resample duplicates patients, so ties are the rule). Returns beta (B, K), se (B, K),
    ci_low / ci_high (B, K) on the HR scale, and converged (B,) bool. Equal to statsmodels'
    PHReg(ties="breslow") on the expanded resample (tests/study).
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=float)
    order = np.argsort(time, kind="stable")
    t, d, X = time[order], event[order], np.asarray(x, dtype=float)[order]
    W = np.asarray(weights, dtype=float)[:, order]
    first = np.searchsorted(t, t, side="left")  # tied times share the risk set of the first of them
    B, N = W.shape
    K = X.shape[1]
    beta = np.zeros((B, K))
    wd = W * d  # weighted events
    ridge = 1e-9 * np.eye(K)
    converged = np.zeros(B, dtype=bool)
    info = np.zeros((B, K, K))
    for _ in range(max_iter):
        eta = np.clip(beta @ X.T, -50, 50)
        e = W * np.exp(eta)
        s0 = _revcum_at(e, first)
        s0 = np.where(s0 > 0, s0, 1.0)
        s1 = np.stack([_revcum_at(e * X[:, k], first) for k in range(K)], axis=-1)       # (B, N, K)
        mean = s1 / s0[..., None]
        grad = np.einsum("bn,bnk->bk", wd, X[None, :, :] - mean)
        s2 = np.empty((B, N, K, K))
        for k in range(K):
            for m in range(k, K):
                s2[..., k, m] = s2[..., m, k] = _revcum_at(e * X[:, k] * X[:, m], first)
        cov = s2 / s0[..., None, None] - mean[..., :, None] * mean[..., None, :]
        info = np.einsum("bn,bnkm->bkm", wd, cov) + ridge
        step = np.linalg.solve(info, grad[..., None])[..., 0]
        step = np.clip(step, -2.0, 2.0)  # a damped Newton step keeps separated samples finite
        beta = beta + step
        converged = np.abs(step).max(axis=1) < tol
        if converged.all():
            break
    cov_beta = np.linalg.inv(info)
    se = np.sqrt(np.clip(np.diagonal(cov_beta, axis1=1, axis2=2), 0, None))
    z = stats.norm.ppf(1 - alpha / 2)
    with np.errstate(over="ignore"):
        return {"beta": beta, "se": se, "ci_low": np.exp(beta - z * se), "ci_high": np.exp(beta + z * se),
                "converged": converged}


@dataclass(frozen=True)
class PowerCurveInputs:
    """A reference cohort for the empirical power curve (one row per patient)."""

    score: np.ndarray
    time: np.ndarray
    event: np.ndarray
    low: float
    high: float


def power_curve(ref: PowerCurveInputs, sizes: Sequence[int], n_resamples: int = 1000, *, alpha: float = 0.05,
                comparison: str = "poor_vs_good", seed: int = 0, chunk: int = 250, progress: bool = True) -> pd.DataFrame:
    """Per size: the share of resamples whose (1 - alpha) CI of the primary HR excludes 1, the median
    HR CI width, the median HR, and the width of the central (1 - alpha) range of the resampled
    C-index of the score (the C-index CI width a cohort of that size can expect).

    A resample in which a compared group has no events cannot estimate the HR: it counts as not
    significant and is left out of the widths (`not_estimable` says how many).
    """
    from wsi_prognosis.survival.concordance import _MATRIX_MAX_N, _pair_matrices

    score, time, event = (np.asarray(a, dtype=float) for a in (ref.score, ref.time, ref.event))
    event = event.astype(int)
    N = len(score)
    if N < 2 or event.sum() == 0:
        raise ConfigurationError("the reference cohort has no events: the power curve cannot be simulated. "
                                 "Fix: a reference cohort with events (e.g. the tuning cohort with its clinical table).")
    group = np.where(score < ref.low, 0, np.where(score < ref.high, 1, 2))
    target = {"poor_vs_good": 2, "uncertain_vs_good": 1}[comparison]
    x = np.stack([(group == 1).astype(float), (group == 2).astype(float)], axis=1)  # uncertain, poor vs good
    pairs = _pair_matrices(time, event, score) if N <= _MATRIX_MAX_N else None
    rng = np.random.default_rng(seed)
    rows = []
    iterator = sizes
    if progress:
        from tqdm import tqdm

        iterator = tqdm(sizes, desc="power curve", unit="size")
    for n in iterator:
        hr_sig = hr_width = hr_value = None
        sig, widths, hrs, cs, bad = [], [], [], [], 0
        for start in range(0, n_resamples, chunk):
            b = min(chunk, n_resamples - start)
            W = rng.multinomial(int(n), np.full(N, 1.0 / N), size=b).astype(float)
            ev = [(W * event * (group == g)).sum(axis=1) for g in range(3)]
            # a group without events cannot be compared: drop the uncertain group then (as cox_groups does)
            W_fit = np.where((ev[1] == 0)[:, None] & (group == 1)[None, :], 0.0, W)
            ok = (ev[0] > 0) & (ev[target] > 0)
            fit = cox_groups_batched(time, event, x, W_fit, alpha=alpha)
            lo, hi = fit["ci_low"][:, target - 1], fit["ci_high"][:, target - 1]
            good = ok & fit["converged"] & np.isfinite(lo) & np.isfinite(hi)
            bad += int((~good).sum())
            sig.append(good & ((lo > 1) | (hi < 1)))
            widths.append((hi - lo)[good])
            hrs.append(np.exp(fit["beta"][:, target - 1])[good])
            if pairs is not None:
                comparable, concordant = pairs
                Wf = W.astype(np.float32)
                with np.errstate(invalid="ignore", divide="ignore"):
                    num = np.einsum("bi,bi->b", Wf @ concordant, Wf, dtype=np.float64)
                    den = np.einsum("bi,bi->b", Wf @ comparable, Wf, dtype=np.float64)
                cs.append(np.where(den > 0, num / np.where(den > 0, den, 1), np.nan))
        sig_all = np.concatenate(sig)
        hr_sig = float(sig_all.mean())
        w = np.concatenate(widths)
        h = np.concatenate(hrs)
        hr_width = float(np.median(w)) if w.size else None
        hr_value = float(np.median(h)) if h.size else None
        c_width = c_median = None
        if cs:
            c = np.concatenate(cs)
            c = c[np.isfinite(c)]
            if c.size:
                lo_c, hi_c = np.quantile(c, [alpha / 2, 1 - alpha / 2])
                c_width, c_median = float(hi_c - lo_c), float(np.median(c))
        rows.append({"n": int(n), "power": hr_sig, "hr_ci_width": hr_width, "c_ci_width": c_width,
                     "median_hr": hr_value, "median_c": c_median, "not_estimable": bad, "resamples": n_resamples})
    return pd.DataFrame(rows)


__all__ = ["schoenfeld_events", "power_for_events", "detectable_hr", "cohorts_needed", "event_probability",
           "cox_groups_batched", "power_curve", "PowerCurveInputs"]
