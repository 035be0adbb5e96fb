#!/usr/bin/env python
"""Learnability control for the learning benchmark: is the planted signal in the pixels at all?

A recipe that scores C 0.5 on a benchmark cohort can fail for two reasons: the network does not
learn, or the signal is not visible at the resolution the members read. This script separates
the two without any training: it measures simple hand-crafted morphometry on each slide and
prints its C-index (and Spearman correlation with the true risk) per cohort, next to the oracle
C. If the hand-crafted feature ranks patients well but the members do not, the network (steps,
capacity, loss) is the bottleneck, not the data.

Features (scikit-image): haematoxylin blobs are the 15 % darkest haematoxylin pixels of the
tissue (`rgb2hed`), labelled and measured with `regionprops`: their median area and mean
eccentricity (nuclear size and shape, the `nuclear` signal), and their count per mm² of tissue
(cellularity). A feature's C is reported in its better direction and marked when it is reversed
(a larger, paler nucleus can break into fewer dark pixels).

    .venv/bin/python scripts/bench_learnability.py bench_out/learning/cohorts/nuclear_n200_s0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import openslide
import pandas as pd
from scipy.stats import spearmanr
from skimage.color import rgb2hed
from skimage.measure import label, regionprops_table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wsi_prognosis.survival import concordance  # noqa: E402

FEATURES = ("blob_area", "blob_eccentricity", "blobs_per_mm2")


def slide_features(path: Path, dark_quantile: float = 0.85) -> dict[str, float]:
    """Morphometry of one slide's haematoxylin blobs, read at full resolution (level 0)."""
    with openslide.OpenSlide(str(path)) as slide:
        rgb = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
        mpp = float(slide.properties.get(openslide.PROPERTY_NAME_MPP_X, 0.25))
    haematoxylin = rgb2hed(rgb)[..., 0]
    tissue = rgb.mean(axis=-1) < 220
    if tissue.sum() < 100:
        return {name: float("nan") for name in FEATURES}
    blobs = label((haematoxylin > np.quantile(haematoxylin[tissue], dark_quantile)) & tissue)
    props = pd.DataFrame(regionprops_table(blobs, properties=("area", "eccentricity")))
    props = props[(props["area"] >= 12) & (props["area"] < 2000)]   # specks and merged clumps out
    tissue_mm2 = tissue.sum() * (mpp * 1e-3) ** 2
    return {"blob_area": float(props["area"].median()), "blob_eccentricity": float(props["eccentricity"].mean()),
            "blobs_per_mm2": len(props) / tissue_mm2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cohort_dir", type=Path, help="a benchmark cohort (manifest.csv, clinical.csv, truth.csv)")
    parser.add_argument("--cohorts", default="training,tuning,validation")
    args = parser.parse_args()
    root = args.cohort_dir
    manifest = pd.read_csv(root / "manifest.csv", dtype={"patient_id": str})
    manifest = manifest[manifest["cohort"].isin(args.cohorts.split(","))]
    rows = []
    for i, slide in enumerate(manifest.itertuples(), 1):
        rows.append({"slide_id": slide.slide_id, "patient_id": slide.patient_id, "cohort": slide.cohort,
                     **slide_features(root / slide.path)})
        if i % 50 == 0 or i == len(manifest):
            print(f"  measured {i}/{len(manifest)} slides", flush=True)
    table = (pd.DataFrame(rows)
             .merge(pd.read_csv(root / "clinical.csv", dtype={"patient_id": str}), on="patient_id")
             .merge(pd.read_csv(root / "truth.csv", dtype={"patient_id": str}), on="patient_id"))
    out = []
    for cohort, frame in table.groupby("cohort"):
        time, event = frame["time"].to_numpy(), frame["event"].to_numpy()
        row = {"cohort": cohort, "n": len(frame), "c_oracle": concordance(time, event, frame["risk"].to_numpy())}
        for name in FEATURES:
            c = concordance(time, event, frame[name].to_numpy())
            row[f"c_{name}"] = f"{max(c, 1 - c):.3f}{' (reversed)' if c < 0.5 else ''}"
            row[f"rho_{name}"] = round(float(spearmanr(frame[name], frame["risk"])[0]), 2)
        out.append(row)
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print(pd.DataFrame(out).to_string(index=False))


if __name__ == "__main__":
    main()
