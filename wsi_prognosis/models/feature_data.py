"""Bags of cached tile features per slide, for heads trained on a frozen encoder.

The features of every training and tuning slide at the member's resolution are loaded once into
memory (float16: 200 slides x 1,000 tiles x 1,280 dims is 0.5 GB), so an epoch costs no I/O. Each
store is checked against the encoder the member asks for and against its tile store (`FeatureStore.
check`), so features of another encoder or of a re-tiled slide never enter training. A training bag is
a random subset of `bag_size` tiles (all, padded and masked, when fewer), each tile taken from a random
one of its augmented views when the store has views (`embed views=N`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from wsi_prognosis.errors import FeatureStoreError, TrainingError
from wsi_prognosis.features.store import FeatureSpec, feature_store_path, open_feature_store
from wsi_prognosis.tiling import open_tile_store, tile_store_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureBag:
    slide_id: str
    patient_id: str
    features: torch.Tensor            # (N, D) float16
    views: torch.Tensor | None        # (V, N, D) float16 augmented views, or None
    tile_px: int
    mpp: float
    tiles_file: str
    y: float = float("nan")
    time: float = float("nan")
    event: int = 0
    label: str = ""

    @property
    def n_tiles(self) -> int:
        return int(self.features.shape[0])


def feature_bags(table: pd.DataFrame, tiles_dir: str | Path, features_root: str | Path, resolution: str,
                 spec: FeatureSpec, *, min_tissue_fraction: float = 0.0, verify_fingerprints: bool = True,
                 use_views: bool = True) -> tuple[list[FeatureBag], list[str]]:
    """A `FeatureBag` per row of `table` (slides without tiles at `resolution` are left out and named).

    Raises `FeatureStoreError` naming the file (and the `embed` command) when a store is missing, and
    `FeatureStoreMismatchError` when it was made with another encoder or from another tile store.
    """
    bags: list[FeatureBag] = []
    empty: list[str] = []
    for row in table.itertuples(index=False):
        with open_tile_store(tile_store_path(tiles_dir, row.slide_id)) as store:
            if verify_fingerprints:
                store.verify_slide(row.path)
            fingerprint = store.content_fingerprint()
            grid = store.grid(resolution)
            keep = store.tissue_fraction(resolution) >= min_tissue_fraction
            tiles_file = str(store.path)
        path = feature_store_path(features_root, spec, str(row.slide_id))
        try:
            features_store = open_feature_store(path)
        except FeatureStoreError as exc:
            raise FeatureStoreError(f"{exc} Embed them with: wsi-prognosis embed tiles={tiles_dir} out={features_root} "
                                    f"encoder={spec.encoder['name']}"
                                    + (" stain_norm=" + str(spec.stain["method"]) if spec.stain else "")) from exc
        with features_store as fs:
            fs.check(spec, fingerprint)
            features = fs.features(resolution)
            views = fs.views(resolution) if use_views else None
        if len(features) != len(keep):
            raise FeatureStoreError(f"{path}: {len(features)} {resolution} tiles but the tile store has {len(keep)}. "
                                    "Fix: rerun `wsi-prognosis embed ... remake=true`.")
        features, views = features[keep], None if views is None else views[:, keep]
        if len(features) == 0:
            log.warning("%s: slide %s has no %s tiles: left out", path, row.slide_id, resolution)
            empty.append(str(row.slide_id))
            continue
        bags.append(FeatureBag(
            slide_id=str(row.slide_id), patient_id=str(row.patient_id),
            features=torch.from_numpy(features.astype(np.float16)),
            views=None if views is None else torch.from_numpy(views.astype(np.float16)),
            tile_px=int(grid.tile_px), mpp=float(grid.mpp), tiles_file=tiles_file,
            y=float(getattr(row, "y", float("nan"))), time=float(getattr(row, "time", float("nan"))),
            event=int(getattr(row, "event", 0)), label=str(getattr(row, "label", ""))))
    return bags, empty


def _item_rng() -> np.random.Generator:
    """Seeded through torch's RNG (`seed_everything`), so bags repeat with the member's seed."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


class FeatureTrainBags(Dataset):
    """Item k: a bag of slide k % n: (features (bag_size, D) float32, mask (bag_size,), y, slide index, time, event)."""

    def __init__(self, bags: list[FeatureBag], bag_size: int, bags_per_slide: int) -> None:
        self.bags, self.bag_size, self.bags_per_slide = bags, int(bag_size), int(bags_per_slide)

    def __len__(self) -> int:
        return len(self.bags) * self.bags_per_slide

    def __getitem__(self, k: int) -> tuple[torch.Tensor, ...]:
        i = k % len(self.bags)
        bag = self.bags[i]
        rng = _item_rng()
        n = bag.n_tiles
        take = min(n, self.bag_size)
        index = torch.from_numpy(rng.choice(n, size=take, replace=False))
        features = bag.features[index].float()
        if bag.views is not None:  # each tile from a random one of (original, view 1, ..., view V)
            pick = torch.from_numpy(rng.integers(0, bag.views.shape[0] + 1, size=take))
            augmented = pick > 0
            if augmented.any():
                features[augmented] = bag.views[pick[augmented] - 1, index[augmented]].float()
        out = torch.zeros((self.bag_size, features.shape[1]))
        mask = torch.zeros(self.bag_size, dtype=torch.bool)
        out[:take], mask[:take] = features, True
        return (out, mask, torch.tensor(bag.y, dtype=torch.float32), torch.tensor(i),
                torch.tensor(bag.time, dtype=torch.float32), torch.tensor(bag.event, dtype=torch.float32))


class FeatureEvalBags(Dataset):
    """Item i: every tile of slide i, not augmented: (features (N, D) float32, slide index)."""

    def __init__(self, bags: list[FeatureBag]) -> None:
        self.bags = bags

    def __len__(self) -> int:
        return len(self.bags)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.bags[i].features.float(), torch.tensor(i)


class FeatureDataModule(pl.LightningDataModule):
    """Training bags and tuning slides of one resolution, all in memory (no loader processes)."""

    def __init__(self, train_bags: list[FeatureBag], tune_bags: list[FeatureBag], *, bag_size: int, batch_size: int,
                 bags_per_slide: int) -> None:
        super().__init__()
        if not train_bags:
            raise TrainingError("no usable training slides with features. Fix: check the manifest and `embed`.")
        self.train_bags, self.tune_bags = train_bags, tune_bags
        self.bag_size, self.batch_size, self.bags_per_slide = bag_size, batch_size, bags_per_slide

    @property
    def tune_outcomes(self) -> pd.DataFrame:
        return pd.DataFrame({"slide_id": [b.slide_id for b in self.tune_bags],
                             "patient_id": [b.patient_id for b in self.tune_bags],
                             "time": [b.time for b in self.tune_bags], "event": [b.event for b in self.tune_bags],
                             "label": [b.label for b in self.tune_bags]})

    def train_dataloader(self) -> DataLoader:
        return DataLoader(FeatureTrainBags(self.train_bags, self.bag_size, self.bags_per_slide),
                          batch_size=self.batch_size, shuffle=True, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(FeatureEvalBags(self.tune_bags), batch_size=1, shuffle=False, num_workers=0)


def describe(bags: list[FeatureBag]) -> dict[str, Any]:
    tiles = [b.n_tiles for b in bags]
    return {"slides": len(bags), "tiles": int(sum(tiles)), "median_tiles": float(np.median(tiles)) if tiles else 0.0,
            "views": int(bags[0].views.shape[0]) if bags and bags[0].views is not None else 0}


__all__ = ["FeatureBag", "FeatureDataModule", "FeatureEvalBags", "FeatureTrainBags", "describe", "feature_bags"]
