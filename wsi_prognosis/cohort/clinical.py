"""clinical.csv: one row per patient (`patient_id, time, event[, covariates...]`).

`event` is 1 when the endpoint happened (cancer-specific death by default), 0 when censored.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from wsi_prognosis.errors import ClinicalError

REQUIRED_COLUMNS = ("patient_id", "time", "event")


def read_clinical(path: str | Path) -> pd.DataFrame:
    """Read and validate clinical.csv strictly (training uses it; analysis has its own lenient reader).

    Raises `ClinicalError` for a missing file or column, duplicate patients, non-numeric or
    negative times and `event` values other than 0/1.
    """
    path = Path(path)
    if not path.is_file():
        raise ClinicalError(f"{path}: clinical table not found. Fix: pass clinical=PATH to an existing CSV.")
    try:
        table = pd.read_csv(path, dtype={"patient_id": str})
    except Exception as exc:
        raise ClinicalError(f"{path}: cannot be parsed as CSV ({exc}).") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ClinicalError(
            f"{path}: missing column(s) {missing}; found {list(table.columns)}. "
            f"Fix: clinical.csv needs {list(REQUIRED_COLUMNS)}."
        )
    duplicated = table["patient_id"][table["patient_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ClinicalError(f"{path}: duplicate patient_id(s) {duplicated[:5]}. Fix: one row per patient.")
    time = pd.to_numeric(table["time"], errors="coerce")
    bad_time = time.isna() | (time < 0)
    if bad_time.any():
        rows = [int(i) + 2 for i in table.index[bad_time][:5]]
        raise ClinicalError(f"{path}: `time` missing, non-numeric or negative on line(s) {rows}. Fix: follow-up time ≥ 0.")
    event = pd.to_numeric(table["event"], errors="coerce")
    bad_event = ~event.isin([0, 1])
    if bad_event.any():
        rows = [int(i) + 2 for i in table.index[bad_event][:5]]
        raise ClinicalError(f"{path}: `event` must be 0 (censored) or 1 (endpoint) on line(s) {rows}.")
    table["time"] = time.astype(float)
    table["event"] = event.astype(int)
    return table.reset_index(drop=True)
