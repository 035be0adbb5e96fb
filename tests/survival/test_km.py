"""Kaplan–Meier steps and number-at-risk counts on a hand-built table (answers worked out by hand)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wsi_prognosis.survival import at_risk_table, km_table, plot_km
from wsi_prognosis.survival.followup import median_followup

# group "good": (time, event) = (1,1) (2,1) (2,0) (3,1) (4,0) (5,1)           n = 6
# group "poor": (0.5,0) (3,1) (6,1)                                            n = 3
HAND = pd.DataFrame({
    "patient_id": [f"p{i}" for i in range(9)],
    "risk_group": ["good"] * 6 + ["poor"] * 3,
    "time": [1, 2, 2, 3, 4, 5, 0.5, 3, 6],
    "event": [1, 1, 0, 1, 0, 1, 0, 1, 1],
})


def test_km_steps_by_hand():
    table = km_table(HAND, "risk_group").set_index(["group", "time"])
    good = table.loc["good"]
    # t=1: 6 at risk, 1 death        S = 5/6
    # t=2: 5 at risk, 1 death, 1 cens S = 5/6 * 4/5 = 2/3
    # t=3: 3 at risk (3, 4, 5), 1 death  S = 2/3 * 2/3 = 4/9
    # t=4: 2 at risk, censored       S stays 4/9
    # t=5: 1 at risk, 1 death        S = 0
    assert good.loc[1.0, "at_risk"] == 6 and good.loc[1.0, "events"] == 1
    assert good.loc[2.0, "at_risk"] == 5 and good.loc[2.0, "events"] == 1 and good.loc[2.0, "censored"] == 1
    assert good.loc[3.0, "at_risk"] == 3
    assert good["survival"].to_dict() == pytest.approx({0.0: 1.0, 1.0: 5 / 6, 2.0: 2 / 3, 3.0: 4 / 9, 4.0: 4 / 9, 5.0: 0.0})
    poor = table.loc["poor"]
    # poor: censored at 0.5 (S=1), t=3: 2 at risk, 1 death -> 1/2, t=6: 1 at risk, 1 death -> 0
    assert poor["survival"].to_dict() == pytest.approx({0.0: 1.0, 0.5: 1.0, 3.0: 0.5, 6.0: 0.0})
    assert (good["ci_low"] <= good["survival"] + 1e-12).all() and (good["survival"] <= good["ci_high"] + 1e-12).all()


def test_at_risk_counts_by_hand():
    table = at_risk_table(HAND, [0, 2, 4], "risk_group")
    got = {(r.group, r.time): (r.at_risk, None if pd.isna(r.events) else int(r.events)) for r in table.itertuples()}
    # good: at 0 all 6 at risk; events in [0,2): t=1 -> 1
    #       at 2: times >= 2 are 2,2,3,4,5 -> 5; events in [2,4): t=2 (event), t=3 -> 2
    #       at 4: times 4, 5 -> 2; last point: no interval -> blank
    # check: 6 - 1 event - 0 censored = 5; 5 - 2 events - 1 censored (t=2) = 2
    assert got[("good", 0.0)] == (6, 1)
    assert got[("good", 2.0)] == (5, 2)
    assert got[("good", 4.0)] == (2, None)
    # poor: at 0 -> 3, [0,2): 0.5 is censored -> 0 events; at 2 -> 2, [2,4): t=3 -> 1; at 4 -> 1
    assert got[("poor", 0.0)] == (3, 0)
    assert got[("poor", 2.0)] == (2, 1)
    assert got[("poor", 4.0)] == (1, None)
    # an empty group keeps its rows, with zeros, so the figure's table has every group
    assert got[("uncertain", 0.0)] == (0, 0)
    assert list(table.columns) == ["group", "time", "at_risk", "events"]


def test_km_figure_table_aligned_under_ticks():
    fig = plot_km(HAND, "risk_group", times=[0, 2, 4], time_unit="months")
    ax, table_ax = fig.axes[:2]
    assert ax.get_xlabel() == "Time (months)"
    assert [t for t in ax.get_xticks()] == [0, 2, 4]
    cells = {t.get_text(): t.get_position()[0] for t in table_ax.texts}
    # the DoMore form "at risk (events)", each centred on its time tick
    assert cells["6 (1)"] == 0 and cells["5 (2)"] == 2 and cells["3 (0)"] == 0 and cells["2 (1)"] == 2
    assert "Good prognosis" in cells and "Poor prognosis" in cells
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_median_followup_reverse_km():
    # (1,e) (2,c) (3,c) (4,e) (5,c): reverse KM treats censoring as the event.
    # t=2: 4 at risk (2,3,4,5), 1 -> S=3/4; t=3: 3 at risk, 1 -> S=1/2 -> median follow-up 3
    value, reason = median_followup([1, 2, 3, 4, 5], [1, 0, 0, 1, 0])
    assert value == pytest.approx(3.0) and reason is None
    value, reason = median_followup([1, 2, 3], [1, 1, 1])
    assert value is None and "no censored" in reason
    assert median_followup(np.array([]), np.array([]))[0] is None
