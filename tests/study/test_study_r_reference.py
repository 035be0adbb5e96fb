"""Pooled estimates against metafor::rma and landmark survival against survival::survfit (R), to 0.1 %.

Skipped, saying why, where Rscript (r-base-core, r-cran-metafor, r-cran-survival) is missing.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from study_helpers import run_r

from wsi_prognosis.survival.landmarks import km_at, landmark_table
from wsi_prognosis.survival.pooled import random_effects

# five cohorts with clear heterogeneity (tau² > 0 for both estimators) and a sixth set without any
HETEROGENEOUS = ([np.log(v) for v in (3.1, 1.6, 2.4, 4.8, 1.9)], [0.21, 0.18, 0.30, 0.25, 0.15])
HOMOGENEOUS = ([np.log(v) for v in (2.0, 2.1, 1.95)], [0.3, 0.25, 0.35])


def _metafor(yi, sei, tmp_path) -> dict:
    script = f"""
suppressMessages(library(metafor))
yi <- c({", ".join(map(repr, map(float, yi)))}); sei <- c({", ".join(map(repr, map(float, sei)))})
out <- list()
for (m in c("DL", "PM")) {{
  fit <- rma(yi = yi, sei = sei, method = m)
  p <- predict(fit, transf = exp)
  out[[tolower(m)]] <- c(hr = exp(as.numeric(fit$b)), ci_low = p$ci.lb, ci_high = p$ci.ub, pi_low = p$pi.lb,
                         pi_high = p$pi.ub, tau2 = fit$tau2, i2 = fit$I2 / 100, q = fit$QE, q_p = fit$QEp)
}}
cat(sprintf('{{"dl": [%s], "pm": [%s]}}\\n', paste(sprintf("%.12g", out$dl), collapse = ","),
            paste(sprintf("%.12g", out$pm), collapse = ",")))
"""
    values = json.loads(run_r(script, tmp_path).strip().splitlines()[-1])
    keys = ["hr", "ci_low", "ci_high", "pi_low", "pi_high", "tau2", "i2", "q", "q_p"]
    return {m: dict(zip(keys, v)) for m, v in values.items()}


@pytest.mark.parametrize("data", [HETEROGENEOUS, HOMOGENEOUS], ids=["heterogeneous", "homogeneous"])
def test_pooled_estimates_match_metafor(data, tmp_path):
    yi, sei = data
    reference = _metafor(yi, sei, tmp_path)
    names = [f"c{i}" for i in range(len(yi))]
    for method in ("dl", "pm"):
        ours = random_effects(yi, sei, names, method=method)
        ref = reference[method]
        for key in ("hr", "ci_low", "ci_high", "pi_low", "pi_high", "q", "q_p"):
            assert ours[key] == pytest.approx(ref[key], rel=1e-3), (method, key, ours[key], ref[key])
        assert ours["tau2"] == pytest.approx(ref["tau2"], rel=1e-3, abs=1e-6), (method, ours["tau2"], ref["tau2"])
        if method == "dl":  # metafor's I² follows each method's tau²; ours is Q-based, equal for DL
            assert ours["i2"] == pytest.approx(ref["i2"], rel=1e-3, abs=1e-6)
    if data is HETEROGENEOUS:
        assert reference["dl"]["tau2"] > 0.05 and reference["pm"]["tau2"] > 0.05  # the case exercises tau² > 0
    else:
        assert reference["dl"]["tau2"] == 0  # the truncated DL estimate (statsmodels' own is negative here)


def test_landmark_survival_matches_survfit_log_log(simulate, tmp_path):
    scores, clinical = simulate(400, seed=31, hrs=(1.0, 2.0, 3.5))
    df = scores[["patient_id", "risk_group"]].merge(clinical, on="patient_id")
    csv = tmp_path / "cohort.csv"
    df[["time", "event", "risk_group"]].to_csv(csv, index=False)
    script = f"""
suppressMessages(library(survival))
d <- read.csv("{csv}")
fit <- survfit(Surv(time, event) ~ risk_group, data = d, conf.type = "log-log")
s <- summary(fit, times = c(2, 5))
g <- sub("risk_group=", "", as.character(s$strata))
for (i in seq_along(g)) cat(sprintf("%s,%g,%.12g,%.12g,%.12g,%d\\n", g[i], s$time[i], s$surv[i], s$lower[i], s$upper[i], s$n.risk[i]))
"""
    rows = [line.split(",") for line in run_r(script, tmp_path).strip().splitlines()]
    reference = pd.DataFrame(rows, columns=["group", "landmark", "survival", "ci_low", "ci_high", "at_risk"])
    ours = landmark_table(df, [2, 5])
    assert len(reference) == 6
    for r in reference.itertuples():
        mine = ours[(ours["group"] == r.group) & (ours["landmark"] == float(r.landmark))].iloc[0]
        for key in ("survival", "ci_low", "ci_high"):
            assert mine[key] == pytest.approx(float(getattr(r, key)), rel=1e-3), (r.group, r.landmark, key)
        assert int(mine["at_risk"]) == int(r.at_risk)


def test_landmark_beyond_follow_up_is_not_estimable():
    entry = km_at([1.0, 2.0, 3.0], [0, 1, 0], 5.0)
    assert entry["survival"] is None and "no follow-up to 5" in entry["reason"]
    assert km_at([], [], 5.0)["reason"] == "no patients"
