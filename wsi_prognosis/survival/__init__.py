"""Survival analysis per cohort: Kaplan–Meier, log-rank, Cox, C-index, reports (lifelines).

The tidy API the notebook and users call:

    from wsi_prognosis.survival import analyze, km_table, cox_table, plot_km, concordance
    result = analyze(scores_df, clinical_df)            # AnalysisResult: tidy DataFrames + summary dict
    result.cox.query("cohort == 'validation'")
    fig = plot_km(result.patients.query("cohort == 'validation'"), "risk_group")

`concordance(time, event, risk)` is THE C-index of the project: higher risk = worse.
"""

from wsi_prognosis.survival.api import AnalysisConfig, AnalysisResult, PrimaryAnalysis, analyze
from wsi_prognosis.survival.config import config_from_dict
from wsi_prognosis.survival.concordance import concordance, concordance_ci, concordance_difference
from wsi_prognosis.survival.cox import cox_groups, cox_per_sd, cox_table
from wsi_prognosis.survival.followup import median_followup
from wsi_prognosis.survival.inputs import prepare, read_table
from wsi_prognosis.survival.km import at_risk_table, km_table, plot_km
from wsi_prognosis.survival.logrank import logrank_table
from wsi_prognosis.survival.outputs import write_analysis

__all__ = [
    "AnalysisConfig", "AnalysisResult", "PrimaryAnalysis", "analyze", "config_from_dict", "write_analysis",
    "concordance", "concordance_ci", "concordance_difference",
    "cox_groups", "cox_per_sd", "cox_table", "median_followup", "prepare", "read_table",
    "at_risk_table", "km_table", "plot_km", "logrank_table",
]
