"""Tuning metrics of a member: slide-level C-index and AUC of good vs poor among extreme outcomes."""

from __future__ import annotations

import numpy as np


def c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C of a risk score (higher = worse); NaN when no pair is comparable.

    Delegates to `wsi_prognosis.survival.concordance`, the project's one C-index; the lifelines
    fallback (sign flipped here: lifelines wants a survival-time-like score) only runs where the
    survival module is not installed.
    """
    try:
        from wsi_prognosis.survival.concordance import concordance
    except ImportError:  # pragma: no cover - survival module absent
        from lifelines.utils import concordance_index

        time, event, risk = np.asarray(time, float), np.asarray(event, int), np.asarray(risk, float)
        if len(time) < 2 or event.sum() == 0:
            return float("nan")
        try:
            return float(concordance_index(time, -risk, event))
        except ZeroDivisionError:
            return float("nan")
    return float(concordance(time, event, risk))


def auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC (Mann–Whitney, ties count 1/2); NaN unless both classes are present."""
    y_true = np.asarray(y_true, bool)
    score = np.asarray(score, float)
    pos, neg = score[y_true], score[~y_true]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def tuning_metrics(score: np.ndarray, time: np.ndarray, event: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """c_index over all tuning slides; auc_extremes over those labelled good/poor (1 = poor)."""
    label = np.asarray(label)
    extreme = np.isin(label, ["good", "poor"])
    return {
        "c_index": c_index(time, event, score),
        "auc_extremes": auc(label[extreme] == "poor", np.asarray(score)[extreme]),
        "n_slides": int(len(score)),
        "n_extremes": int(extreme.sum()),
    }
