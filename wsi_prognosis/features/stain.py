"""Stain normalisation before the encoder: the feature set's target, fitted once and kept beside it.

The target (per resolution: Macenko stain vectors and maximum concentrations, `models.stain`) is the
median over the training cohort's slides. It is written as `<features>/<set>/stain_target.json` the
first time a set is embedded and reused by every later `embed` of that set (another cohort, another
shard), so all slides of a feature set are normalised onto one target; bundles record it, so scoring
new slides on the fly does the same.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsi_prognosis.atomic import write_text_atomic
from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.models.stain import FIT_TILES, StainFit, evenly_spaced, fit_stain, median_target, od_matrix

log = logging.getLogger(__name__)

TARGET_FILE = "stain_target.json"
METHODS = ("none", "macenko")


def slide_fit(read: Callable[[np.ndarray], np.ndarray], n_tiles: int) -> StainFit | None:
    """A slide's Macenko estimate from FIT_TILES evenly spaced tiles (`read(index) -> tiles`)."""
    if n_tiles == 0:
        return None
    return fit_stain(read(evenly_spaced(n_tiles, FIT_TILES)))


def stain_target(folder: Path, resolutions: Sequence[str],
                 training_fits: Callable[[], Mapping[str, list[StainFit | None]]]) -> dict[str, Any]:
    """The feature set's target {"method": "macenko", "targets": {res: {he, max_c}}}: read from `folder`, or
    fitted from `training_fits()` (per resolution, the training slides' estimates) and written there."""
    path = folder / TARGET_FILE
    if path.is_file():
        target = json.loads(path.read_text())
        missing = [r for r in resolutions if r not in target.get("targets", {})]
        if not missing:
            return target
        raise ConfigurationError(f"{path}: has no stain target for {missing}. Fix: delete the feature folder "
                                 f"{folder} and embed again with the training cohort in the manifest.")
    fits = training_fits()
    if not any(fits.values()):
        raise ConfigurationError(
            f"{folder}: stain_norm=macenko needs the training cohort's slides to fit its target the first time. "
            "Fix: pass manifest= with the training cohort (train_cohort=), or stain_norm=none.")
    target = {"method": "macenko",
              "targets": {res: median_target(list(fits.get(res, []))).to_dict() for res in resolutions}}
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(target, indent=1) + "\n")
    log.info("stain target of %s fitted on %d training slide(s)", folder, max(len(v) for v in fits.values()))
    return target


def slide_matrix(fit: StainFit | None, target: Mapping[str, Any], resolution: str) -> np.ndarray:
    """3x3 optical-density matrix onto the set's target at `resolution` (identity when not estimable)."""
    return od_matrix(fit, StainFit.from_dict(target["targets"][resolution])).astype(np.float32)


__all__ = ["METHODS", "TARGET_FILE", "slide_fit", "slide_matrix", "stain_target"]
