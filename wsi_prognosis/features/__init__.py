"""Cached tile embeddings: the feature store (`store`), the `embed` batch (`embed`), stain targets (`stain`)."""

from wsi_prognosis.features.store import (
    FeatureSpec,
    FeatureStore,
    ResolutionFeatures,
    feature_dir,
    feature_store_path,
    open_feature_store,
    write_feature_store,
)

__all__ = ["FeatureSpec", "FeatureStore", "ResolutionFeatures", "feature_dir", "feature_store_path",
           "open_feature_store", "write_feature_store"]
