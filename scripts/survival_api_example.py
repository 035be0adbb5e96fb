#!/usr/bin/env python3
"""The tidy survival API in a dozen lines — the pattern the biostatistician's notebook follows.

    python scripts/survival_api_example.py SCORES.csv CLINICAL.csv [OUT_DIR]

`analyze` returns tidy DataFrames (one row per cohort x group/term/time) and the summary dict that
`wsi-prognosis analyze` writes as summary.json; the building blocks work on any DataFrame with
`time`, `event` and a group column.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def example(scores: pd.DataFrame, clinical: pd.DataFrame, out_dir: Path | None = None, n_bootstrap: int = 1000) -> dict:
    from wsi_prognosis.survival import (AnalysisConfig, analyze, concordance, cox_table, km_table,
                                        plot_km, write_analysis)

    result = analyze(scores, clinical, AnalysisConfig(n_bootstrap=n_bootstrap, time_points=(0, 2, 4, 6, 8)))
    print(result.cohorts.to_string(index=False))                                  # n, events, follow-up
    print(result.cox.query("model != 'score_per_sd'")[["cohort", "model", "term", "hr", "ci_low", "ci_high", "p"]]
          .round(3).to_string(index=False))
    print(result.at_risk.query("marker == 'risk_group'").pivot_table(
        index=["cohort", "group"], columns="time", values="at_risk").to_string())

    # the building blocks on one cohort's patients
    cohort = result.cohorts["cohort"].iloc[-1]
    patients = result.patients[result.patients["cohort"] == cohort]
    km = km_table(patients, "risk_group")                       # group, time, at_risk, events, survival, CI
    hrs = cox_table(patients, "risk_group", covariates=["pT"])  # uncertain/poor vs good (+ pT)
    c = concordance(patients["time"], patients["event"], patients["score"])   # higher score = worse
    print(f"{cohort}: {len(km)} KM rows, C-index {c:.3f}")
    print(hrs.round(3).to_string(index=False))
    fig = plot_km(patients, "risk_group", times=(0, 2, 4, 6, 8), time_unit="years", title=f"{cohort} cohort")
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_dir / f"example_km_{cohort}.png", dpi=150)
        write_analysis(result, out_dir)                          # the same files as the CLI
    import matplotlib.pyplot as plt

    plt.close(fig)
    return result.summary


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print(__doc__)
        sys.exit(2)
    from wsi_prognosis.survival import read_table

    example(read_table(sys.argv[1], "scores"), read_table(sys.argv[2], "clinical"),
            Path(sys.argv[3]) if len(sys.argv) > 3 else None)
