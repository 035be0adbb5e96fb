#!/usr/bin/env python
"""The simple baseline of the learning benchmark: a penalised Cox model on each slide's mean embedding.

Per slide, the mean of its (at most 64, evenly spaced) tile embeddings at one resolution, from the same
feature stores the heads train on; per patient, the mean of their slides in a cohort. Principal components
(8, fitted on the training patients, standardised) feed a ridge-penalised Cox model (lifelines) fitted on
the training patients; the penalty is the one with the best C on the tuning patients. The ten-member
ensemble should do at least as well as this one model.

    .venv/bin/python scripts/bench_probe.py COHORT_DIR FEATURES_DIR [--feature-set lite0] [--resolution 40x]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PENALTIES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def slide_means(cohort_dir: Path, features_dir: Path, feature_set: str, resolution: str, max_tiles: int = 64) -> pd.DataFrame:
    """One row per slide: slide_id, patient_id, cohort and the mean embedding (columns f0..fD-1)."""
    from wsi_prognosis.features import open_feature_store
    from wsi_prognosis.models.stain import evenly_spaced

    manifest = pd.read_csv(cohort_dir / "manifest.csv", dtype={"patient_id": str})
    rows, vectors = [], []
    for row in manifest.itertuples(index=False):
        path = features_dir / feature_set / f"{row.slide_id}.h5"
        if not path.is_file():
            continue
        with open_feature_store(path) as store:
            if resolution not in store.resolutions:
                continue
            features = store.features(resolution)
        if len(features) == 0:
            continue
        vectors.append(features[evenly_spaced(len(features), max_tiles)].mean(0))
        rows.append({"slide_id": row.slide_id, "patient_id": row.patient_id, "cohort": row.cohort})
    table = pd.DataFrame(rows)
    return pd.concat([table, pd.DataFrame(np.stack(vectors), columns=[f"f{i}" for i in range(len(vectors[0]))])], axis=1)


def probe(cohort_dir: Path, features_dir: Path, feature_set: str = "lite0", resolution: str = "40x",
          components: int = 8) -> dict[str, float]:
    """C of the mean-embedding Cox model per cohort (patients), and the chosen penalty."""
    from lifelines import CoxPHFitter
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from wsi_prognosis.survival import concordance

    slides = slide_means(cohort_dir, features_dir, feature_set, resolution)
    feats = [c for c in slides.columns if c.startswith("f")]
    patients = slides.groupby(["cohort", "patient_id"])[feats].mean().reset_index()
    clinical = pd.read_csv(cohort_dir / "clinical.csv", dtype={"patient_id": str})
    patients = patients.merge(clinical[["patient_id", "time", "event"]], on="patient_id")
    train = patients[patients["cohort"] == "training"]
    scaler = StandardScaler().fit(train[feats])
    pca = PCA(n_components=components, random_state=0).fit(scaler.transform(train[feats]))
    pcs = [f"pc{i}" for i in range(components)]
    patients = patients.join(pd.DataFrame(pca.transform(scaler.transform(patients[feats])), columns=pcs,
                                          index=patients.index))
    train = patients[patients["cohort"] == "training"]

    def c_of(model: CoxPHFitter, cohort: str) -> float:
        frame = patients[patients["cohort"] == cohort]
        risk = model.predict_partial_hazard(frame[pcs]).to_numpy()
        return float(concordance(frame["time"].to_numpy(), frame["event"].to_numpy(), risk))

    best = None
    for penalty in PENALTIES:
        model = CoxPHFitter(penalizer=penalty).fit(train[pcs + ["time", "event"]], "time", "event")
        tuning_c = c_of(model, "tuning")
        if best is None or tuning_c > best[0]:
            best = (tuning_c, penalty, model)
    assert best is not None
    result = {"penalty": best[1]}
    for cohort in sorted(patients["cohort"].unique()):
        result[cohort] = c_of(best[2], cohort)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cohort_dir", type=Path)
    parser.add_argument("features_dir", type=Path)
    parser.add_argument("--feature-set", default="lite0")
    parser.add_argument("--resolution", default="40x")
    args = parser.parse_args()
    print(probe(args.cohort_dir, args.features_dir, args.feature_set, args.resolution))


if __name__ == "__main__":
    main()
