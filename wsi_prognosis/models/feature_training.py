"""The frozen-encoder recipe of `train`: a multiple-instance head on cached features (`embed`).

Finds the feature set the member asks for (`encoder=NAME`, plus `-macenko` with data.stain_norm=macenko,
whose target is the set's stain_target.json), loads and checks every training and tuning slide's
store, standardises the head's input with the training tiles' statistics and hands the common
training loop a `HeadModule`. The member records the encoder's identity (name, weights sha256,
preprocessing, stain target), so `score` can refuse or reproduce exactly these features.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import pandas as pd
import pytorch_lightning as pl

from wsi_prognosis.errors import TrainingError
from wsi_prognosis.features.store import FeatureSpec, feature_dir
from wsi_prognosis.models.feature_data import FeatureDataModule, describe, feature_bags
from wsi_prognosis.models.heads import HeadConfig, feature_statistics

if TYPE_CHECKING:
    from wsi_prognosis.models.config import TrainConfig
    from wsi_prognosis.models.training import Prepared

log = logging.getLogger(__name__)


def expected_spec(config: "TrainConfig") -> FeatureSpec:
    """The feature set a member of `config` trains on (identity of the installed encoder weights)."""
    from wsi_prognosis.encoders.registry import identity_of
    from wsi_prognosis.features.stain import TARGET_FILE

    identity = identity_of(config.encoder.name, weights=config.encoder.weights)
    spec = FeatureSpec(encoder=identity)
    if config.data.stain_norm == "macenko":
        assert config.features is not None
        target = feature_dir(config.features, FeatureSpec(encoder=identity, stain={"method": "macenko"})) / TARGET_FILE
        if not target.is_file():
            raise TrainingError(f"{target}: not found: data.stain_norm=macenko trains on features embedded with "
                                f"stain_norm=macenko. Fix: wsi-prognosis embed tiles={config.tiles} out={config.features} "
                                f"manifest={config.manifest} encoder={config.encoder.name} stain_norm=macenko")
        spec = FeatureSpec(encoder=identity, stain=json.loads(target.read_text()))
    return spec


def prepare_features(config: "TrainConfig", train_table: pd.DataFrame, tune_table: pd.DataFrame) -> "Prepared":
    from wsi_prognosis.models.head_lit import HeadModule
    from wsi_prognosis.models.training import Prepared, check_grids, check_usable, tile_spec_from_store

    if config.features is None:
        raise TrainingError(
            f"encoder={config.encoder.name} trains heads on cached features, so features=DIR is required. Fix: "
            f"wsi-prognosis embed tiles={config.tiles} out=features manifest={config.manifest} "
            f"encoder={config.encoder.name}, then pass features=features (or encoder=none to train a CNN on pixels).")
    spec = expected_spec(config)
    res = config.resolution
    options = dict(min_tissue_fraction=config.data.min_tissue_fraction, verify_fingerprints=config.data.verify_fingerprints,
                   use_views=config.data.use_views)
    train_bags, train_empty = feature_bags(train_table, config.tiles, config.features, res, spec, **options)
    tune_bags, tune_empty = feature_bags(tune_table, config.tiles, config.features, res, spec,
                                         **{**options, "use_views": False})
    left_out = {"training": train_empty, "tuning": tune_empty}
    check_usable(train_bags, tune_bags, left_out, res, config)
    tile_px, mpp = check_grids([(b.tile_px, b.mpp) for b in train_bags + tune_bags], res)
    head = HeadConfig(**config.model.head)
    dim = int(train_bags[0].features.shape[1])
    mean, std = feature_statistics([b.features for b in train_bags])
    log.info("%s: features %s (%s) of %s", config.member, spec.name, describe(train_bags), config.features)

    def build() -> tuple[pl.LightningDataModule, pl.LightningModule]:
        module = HeadModule(dim=dim, head=head.to_dict(), optim=config.model.optim, loss=config.model.loss,
                            cox_weight=config.model.cox_weight)
        module.head.set_standardisation(mean, std)
        data = FeatureDataModule(train_bags, tune_bags, bag_size=config.data.bag_size, batch_size=config.data.batch_size,
                                 bags_per_slide=config.data.bags_per_slide)
        return data, module

    preprocessing = {"tile_px": tile_px, "mpp": mpp, **spec.encoder["preprocessing"]}
    record = {"arch": f"head-{head.pooling}", "pooling": {"method": head.pooling},
              "encoder": {**spec.record()["encoder"], "feature_set": spec.name, "stain": spec.record()["stain"]},
              "head": {**head.to_dict(), "dim": dim}, "preprocessing": preprocessing,
              "tile_spec": tile_spec_from_store(train_bags[0].tiles_file)}
    n_tiles = int(sum(b.n_tiles for b in train_bags))
    # one thread: a head's matrices are tiny, so a second thread only waits on the first
    return Prepared(train_bags, tune_bags, left_out, n_tiles, record, build, "head.", cpu_threads=1)
