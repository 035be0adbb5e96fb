"""Outcome labels: DoMore's good / poor / excluded windows, configurable thresholds and unit."""

from __future__ import annotations

import pandas as pd
import pytest

from wsi_prognosis.cohort.labels import LabelConfig, outcome_labels, training_labels
from wsi_prognosis.errors import ConfigurationError, TrainingError

DAY = 1 / 365.25


def test_windows_and_boundaries():
    clinical = pd.DataFrame({
        "patient_id": list("abcdefgh"),
        #        > 6 y alive, exactly 6 y, event at 7 y, 99 d death, 100 d death, 2.5 y death, 2.6 y death, 3 y censored
        "time": [6.5, 6.0, 7.0, 99 * DAY, 100 * DAY, 2.5, 2.6, 3.0],
        "event": [0, 0, 1, 1, 1, 1, 1, 0],
    })
    assert outcome_labels(clinical).tolist() == [
        "good", "excluded", "excluded", "excluded", "poor", "poor", "excluded", "excluded"]


def test_thresholds_in_days():
    clinical = pd.DataFrame({"patient_id": ["a", "b", "c"], "time": [2200.0, 50.0, 400.0], "event": [0, 1, 1]})
    config = LabelConfig(time_unit="days", good_min_followup=2191.5, poor_min_time=100, poor_max_time=913)
    assert outcome_labels(clinical, config).tolist() == ["good", "excluded", "poor"]
    # the same times read as years would all be "good"/"excluded": the unit matters
    assert outcome_labels(clinical).tolist() == ["good", "excluded", "excluded"]


def test_bad_thresholds_are_refused():
    with pytest.raises(ConfigurationError, match="time_unit"):
        LabelConfig(time_unit="weeks")
    with pytest.raises(ConfigurationError, match="overlap"):
        LabelConfig(good_min_followup=2.0)


def _tables(times, events):
    ids = [f"p{i}" for i in range(len(times))]
    manifest = pd.DataFrame({"slide_id": [f"s{i}" for i in ids], "patient_id": ids, "path": "x", "cohort": "training"})
    clinical = pd.DataFrame({"patient_id": ids, "time": times, "event": events})
    return manifest, clinical


def test_training_labels_counts_and_targets():
    manifest, clinical = _tables([7.0, 8.0, 1.0, 4.0], [0, 0, 1, 0])
    table, counts = training_labels(manifest, clinical)
    assert counts == {"good": 2, "poor": 1, "excluded": 1}
    assert dict(zip(table["patient_id"], table["y"])) == {"p0": 0.0, "p1": 0.0, "p2": 1.0}


@pytest.mark.parametrize("times,events,missing", [([7.0, 8.0], [0, 0], "poor"), ([1.0, 2.0], [1, 1], "good")])
def test_empty_class_is_a_clear_error(times, events, missing):
    manifest, clinical = _tables(times, events)
    with pytest.raises(TrainingError, match=f"no {missing}-prognosis patient"):
        training_labels(manifest, clinical, source="clinical.csv")


def test_later_event_counts_as_good_when_allowed():
    clinical = pd.DataFrame({"patient_id": ["a", "b"], "time": [7.0, 5.0], "event": [1, 1]})
    assert outcome_labels(clinical).tolist() == ["excluded", "excluded"]
    assert outcome_labels(clinical, LabelConfig(good_allows_later_event=True)).tolist() == ["good", "excluded"]
