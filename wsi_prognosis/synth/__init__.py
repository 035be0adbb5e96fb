"""Synthetic cohorts with known ground truth: slides, outcomes, tables, gallery.

    from wsi_prognosis.synth import SynthConfig, make_cohort
    make_cohort(out_dir, SynthConfig.from_preset("demo", seed=0))

The latent risk r of each patient shapes nuclei (40x) and architecture (10x); survival follows
a Weibull proportional-hazards model on r. `simulate_cohort_tables` gives the tables alone.
"""

from wsi_prognosis.synth.cohort import make_cohort
from wsi_prognosis.synth.config import OutcomeParams, SynthConfig
from wsi_prognosis.synth.outcomes import simulate_cohort_tables

__all__ = ["OutcomeParams", "SynthConfig", "make_cohort", "simulate_cohort_tables"]
