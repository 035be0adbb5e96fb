"""Median follow-up by the reverse Kaplan–Meier method (Schemper & Smith 1996).

Follow-up is the time to censoring: swap the roles of event and censoring (an endpoint censors
follow-up) and take the median of that Kaplan–Meier curve. Unlike the median observed time it
is not shortened by early deaths.
"""

from __future__ import annotations

import numpy as np
from lifelines import KaplanMeierFitter


def median_followup(time, event) -> tuple[float | None, str | None]:
    """(median follow-up in the unit of `time`, None) or (None, reason) when not estimable."""
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=int)
    if time.size == 0:
        return None, "no patients"
    if (event == 0).sum() == 0:
        return None, "no censored patients (everyone had the endpoint): follow-up is not defined"
    kmf = KaplanMeierFitter().fit(time, 1 - event)
    median = float(kmf.median_survival_time_)
    if not np.isfinite(median):
        return None, "reverse Kaplan-Meier curve stays above 50 %: median follow-up not reached"
    return median, None
