"""The survival model, checked on large table-only simulations (no pixels needed)."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines.utils import concordance_index

from wsi_prognosis.synth import SynthConfig, simulate_cohort_tables
from wsi_prognosis.synth.outcomes import is_good, is_poor


@pytest.fixture(scope="module")
def big_tables() -> dict:
    # 2,000 patients per cohort: the C-index is then known to about +-0.01
    config = SynthConfig.from_preset("demo", seed=2, n_training=2000, n_tuning=2000, n_validation=2000)
    return simulate_cohort_tables(config)


def test_oracle_c_index_at_least_070_in_every_cohort(big_tables: dict) -> None:
    assert set(big_tables) == {"training", "tuning", "test", "validation"}
    for cohort, table in big_tables.items():
        c_index = concordance_index(table["time"], -table["risk"], table["event"])
        assert c_index >= 0.70, (cohort, c_index)


def test_oracle_c_index_small_demo_cohorts() -> None:
    """The default demo sizes too (44 patients: looser, but well above chance)."""
    tables = simulate_cohort_tables(SynthConfig.from_preset("demo", seed=0))
    for cohort, table in tables.items():
        assert concordance_index(table["time"], -table["risk"], table["event"]) >= 0.65, cohort


def test_training_is_enriched_for_good_and_poor(big_tables: dict) -> None:
    params = SynthConfig.from_preset("demo").outcome
    training, tuning = big_tables["training"], big_tables["tuning"]
    good, poor = is_good(training, params).mean(), is_poor(training, params).mean()
    assert good == pytest.approx(0.5, abs=0.01) and poor == pytest.approx(0.5, abs=0.01)
    assert (training["time"][is_poor(training, params)] <= 2.5).all()
    assert (training["time"][is_poor(training, params)] >= 100 / 365.25).all()
    # the population cohorts are not enriched: intermediate outcomes exist there
    intermediate = ~is_good(tuning, params) & ~is_poor(tuning, params)
    assert intermediate.mean() > 0.2


def test_test_cohort_is_training_patients(big_tables: dict) -> None:
    training, test = big_tables["training"], big_tables["test"]
    assert list(test["patient_id"]) == list(training["patient_id"])
    assert np.allclose(test["risk"], training["risk"])
    assert set(training["patient_id"]).isdisjoint(big_tables["tuning"]["patient_id"])
    assert set(training["patient_id"]).isdisjoint(big_tables["validation"]["patient_id"])


def test_censoring_and_covariates(big_tables: dict) -> None:
    tuning = big_tables["tuning"]
    params = SynthConfig.from_preset("demo").outcome
    assert tuning["time"].max() <= params.followup_max_years + 1e-9
    assert set(tuning["event"].unique()) <= {0, 1}
    assert 0.2 < tuning["event"].mean() < 0.8
    assert (tuning["cause"] == "other").any()           # death from other causes censors
    assert (tuning.loc[tuning["cause"] == "other", "event"] == 0).all()
    for covariate in ("pT", "pN", "grade"):
        assert np.corrcoef(tuning[covariate], tuning["risk"])[0, 1] > 0.3, covariate
    # grade is a noisy reading of r: informative, but worse than r itself
    c_grade = concordance_index(tuning["time"], -tuning["grade"], tuning["event"])
    c_risk = concordance_index(tuning["time"], -tuning["risk"], tuning["event"])
    assert 0.55 < c_grade < c_risk


def test_no_other_cause_deaths_when_disabled() -> None:
    config = SynthConfig.from_preset("demo", n_training=0, with_test=False, n_tuning=500, other_cause_rate_per_year=0.0)
    tuning = simulate_cohort_tables(config)["tuning"]
    assert not (tuning["cause"] == "other").any()


def test_tables_are_deterministic() -> None:
    config = SynthConfig.from_preset("tiny", seed=9)
    a, b = simulate_cohort_tables(config), simulate_cohort_tables(config)
    for cohort in a:
        assert a[cohort].equals(b[cohort])
    c = simulate_cohort_tables(SynthConfig.from_preset("tiny", seed=10))
    assert not np.allclose(a["tuning"]["risk"], c["tuning"]["risk"])


def test_slide_plan_ids_and_blocks(tmp_path) -> None:  # noqa: ANN001
    """Several slides per patient: unique ids and seeds; test slides are other blocks than training's."""
    from wsi_prognosis.synth.cohort import plan_slides

    config = SynthConfig.from_preset("tiny", seed=1, slides_per_patient=2)
    jobs = plan_slides(config, tmp_path, simulate_cohort_tables(config))
    assert len(jobs) == 2 * (6 + 6 + 6 + 6)
    assert len({j.slide_id for j in jobs}) == len(jobs)
    assert len({j.entropy for j in jobs}) == len(jobs)
    assert len({j.path for j in jobs}) == len(jobs)
    blocks = {c: {j.slide_id.rsplit("-", 1)[1] for j in jobs if j.cohort == c} for c in ("training", "test")}
    assert blocks == {"training": {"1", "3"}, "test": {"2", "4"}}
    validation = [j for j in jobs if j.cohort == "validation"]
    assert all(j.flavour == "svs" and j.path.suffix == ".svs" and j.stain_scale == 1.15 for j in validation)
