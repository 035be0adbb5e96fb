"""Networks for tile-level MIL: timm backbones (one factory), pooling, augmentation, Lightning modules.

The Lightning pieces (`data.py`, `lit.py`) import lazily so scoring can use the backbone and
pooling without pulling in Lightning.
"""

from wsi_prognosis.models.backbone import Preprocessing, build_backbone, default_preprocessing, tiles_to_tensor
from wsi_prognosis.models.pooling import POOLING_METHODS, pool_tile_logits

__all__ = ["POOLING_METHODS", "Preprocessing", "build_backbone", "default_preprocessing", "pool_tile_logits", "tiles_to_tensor"]
