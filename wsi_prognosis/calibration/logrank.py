"""Log-rank statistics, vectorised over many candidate cut-point pairs.

The survival cut-point search scores thousands of (low, high) pairs, and the bootstrap repeats
the search hundreds of times; lifelines' `multivariate_logrank_test` (which the tests check this
against) takes milliseconds per call, this takes microseconds per pair. The k-group log-rank
statistic equals the score test of a Cox model with group indicators (Breslow ties), so it is
also the "Cox likelihood" criterion in its score-test form.
"""

from __future__ import annotations

import numpy as np


def _risk_sets(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, n) float32 at-risk and death indicators at each distinct event time."""
    event_times = np.unique(time[event == 1])
    at_risk = (time[None, :] >= event_times[:, None]).astype(np.float32)
    died = ((time[None, :] == event_times[:, None]) & (event[None, :] == 1)).astype(np.float32)
    return at_risk, died


def _variance_weight(n_t: np.ndarray, d_t: np.ndarray) -> np.ndarray:
    """d (n - d) / (n - 1) per event time; 0 where only one subject is at risk."""
    with np.errstate(divide="ignore", invalid="ignore"):
        w = d_t * (n_t - d_t) / (n_t - 1.0)
    return np.where(n_t > 1, w, 0.0)


def logrank_statistic(time: np.ndarray, event: np.ndarray, groups: np.ndarray) -> tuple[float, int]:
    """k-group log-rank chi-square statistic and its degrees of freedom (k - 1).

    time : (n,) float, follow-up; event : (n,) {0, 1}, 1 = endpoint; groups : (n,) labels.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=int)
    labels, codes = np.unique(np.asarray(groups), return_inverse=True)
    k = len(labels)
    if k < 2:
        return 0.0, 0
    at_risk, died = _risk_sets(time, event)
    member = np.eye(k, dtype=np.float32)[codes]            # (n, k)
    n_gt = (at_risk @ member).astype(float)                # (T, k)
    d_gt = (died @ member).astype(float)
    n_t, d_t = n_gt.sum(1), d_gt.sum(1)
    z = (d_gt - n_gt * (d_t / n_t)[:, None]).sum(0)[: k - 1]
    w = _variance_weight(n_t, d_t)
    p = n_gt / n_t[:, None]
    v = np.einsum("t,tg,gh->gh", w, p, np.eye(k)) - np.einsum("t,tg,th->gh", w, p, p)
    v = v[: k - 1, : k - 1]
    stat = float(z @ np.linalg.pinv(v) @ z)
    return stat, k - 1


def pairwise_logrank_statistics(
    score: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    cuts: np.ndarray,
    pairs: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """3-group log-rank statistics for every pair of cut-points.

    score, time, event : (n,) per subject; cuts : (G,) increasing cut values; pairs : (P, 2) int
    indices (a, b) into `cuts` with a < b. Groups: score < cuts[a] (good), cuts[a] <= score <
    cuts[b] (uncertain), score >= cuts[b] (poor).

    Returns the (P,) chi-square statistics (2 degrees of freedom) and the (P, 3) observed /
    expected event ratios of the three groups (NaN where a group expects no events).
    """
    score = np.asarray(score, dtype=float)
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=int)
    at_risk, died = _risk_sets(time, event)
    below = (score[None, :] < np.asarray(cuts)[:, None]).astype(np.float32)   # (G, n)
    a_gt = (below @ at_risk.T).astype(float)                                   # (G, T) at risk below cut
    d_below = (below @ died.T).astype(float)
    n_t = at_risk.sum(1).astype(float)
    d_t = died.sum(1).astype(float)
    a, b = pairs[:, 0], pairs[:, 1]
    n_groups = np.stack([a_gt[a], a_gt[b] - a_gt[a], n_t[None, :] - a_gt[b]], axis=1)    # (P, 3, T)
    d_groups = np.stack([d_below[a], d_below[b] - d_below[a], d_t[None, :] - d_below[b]], axis=1)
    expected_t = n_groups * (d_t / n_t)[None, None, :]
    observed = d_groups.sum(2)
    expected = expected_t.sum(2)
    z = observed[:, :2] - expected[:, :2]
    w = _variance_weight(n_t, d_t)[None, :]
    p0, p1 = n_groups[:, 0] / n_t, n_groups[:, 1] / n_t
    v00 = (w * p0 * (1 - p0)).sum(1)
    v11 = (w * p1 * (1 - p1)).sum(1)
    v01 = -(w * p0 * p1).sum(1)
    det = v00 * v11 - v01 * v01
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = (v11 * z[:, 0] ** 2 - 2 * v01 * z[:, 0] * z[:, 1] + v00 * z[:, 1] ** 2) / det
        ratio = observed / expected
    stat = np.where(det > 1e-12, stat, 0.0)
    return stat, ratio
