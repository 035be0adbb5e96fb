"""Prov-GigaPath's tile encoder (Providence and Microsoft Research).

A ViT-g/16 — 40 blocks, width 1536, 24 heads, SwiGLU MLP (packed, 8192 -> 4096), SiLU, LayerScale, no
register tokens, a class-token position entry — which is timm's `vit_giant_patch14_dinov2` with the model
card's `config.json` arguments (`patch_size=16`, `img_size=224`, `mlp_ratio=5.33334`, `init_values=1e-5`).
Its `pytorch_model.bin` loads strictly into it with timm's names; the embedding is the class token (1536).

The card prepares tiles as Resize(256, bicubic) -> CenterCrop(224) of 256-px tiles at 0.5 µm/px: a 224-px tile
at 0.5 µm/px shows the same scale (the crop only trims the border). Only the tile encoder is built here; the
LongNet slide encoder is not. Apache-2.0, gated; the card says research use only.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from wsi_prognosis.encoders.registry import EncoderSpec, register_encoder
from wsi_prognosis.encoders.vit import build_timm_vit, hf_weights
from wsi_prognosis.encoders.weights import load_by_name
from wsi_prognosis.models.backbone import IMAGENET_MEAN, IMAGENET_STD


def build_gigapath(depth: int = 40) -> nn.Module:
    """(N, 3, 224, 224) -> (N, 1536) class token."""
    return build_timm_vit("vit_giant_patch14_dinov2", img_size=224, in_chans=3, patch_size=16, embed_dim=1536,
                          num_heads=24, init_values=1e-5, mlp_ratio=5.33334, global_pool="token", depth=depth)


@register_encoder("gigapath")
def gigapath() -> EncoderSpec:
    return EncoderSpec(
        name="gigapath", summary="Prov-GigaPath tile encoder (Providence / Microsoft, ViT-g/16, 171k slides; frozen)",
        construction="timm vit_giant_patch14_dinov2(img_size=224, patch_size=16, embed_dim=1536, depth=40, num_heads=24, "
                     "init_values=1e-5, mlp_ratio=5.33334, num_classes=0): SwiGLUPacked MLP, SiLU, LayerScale, no registers",
        dim=1536, input_px=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, mpp=0.5,
        licence="Apache-2.0 with the model card's terms, gated: accept on Hugging Face; research use only, not for "
                "clinical or other deployed use",
        build=partial(build_gigapath, depth=40),
        weights=hf_weights("prov-gigapath/prov-gigapath", "pytorch_model.bin", gated=True),
        load_state=partial(load_by_name, arch="gigapath (timm vit_giant_patch14_dinov2, patch 16)"),
        embedding="class token after the final LayerNorm (1536)")
