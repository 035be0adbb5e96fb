"""Mahmood Lab's encoders: UNI, UNI 2-h and CONCH v1.5's vision tower.

UNI and UNI 2-h are timm ViTs; their `pytorch_model.bin` loads strictly into the timm network built with the
arguments of the model card (and of TRIDENT's encoder factory), so no key is renamed. The embedding is the
class token after the final LayerNorm (timm's `global_pool='token'`).

CONCH v1.5 is published as its vision tower alone (`pytorch_model_vision.bin` in MahmoodLab/conchv1_5): a
ViT-L/16 trunk whose tensors carry timm's own names under `trunk.`, an attentional pooler (one learned query,
8 heads, over every trunk token) and a LayerNorm, giving the 768-d image embedding that TRIDENT and TITAN
use. The trunk is therefore built with timm and only the small pooler is written here — no `conch` or
`open_clip` package is needed, and the key names are the published ones. The release holds a position
embedding for 224 px (14 x 14 patches) and its own forward resamples it bicubically to the 448-px input on
every call (DINO style: `scale_factor=(28 + 0.1) / 14`); here that same resampling is done once, when the
weights are loaded, and the network is built for 448 px.

All three were trained on tiles at 20x (0.5 µm/px); they are CC-BY-NC-ND 4.0, gated on Hugging Face.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wsi_prognosis.encoders.registry import EncoderSpec, register_encoder
from wsi_prognosis.encoders.vit import build_timm_vit, hf_weights
from wsi_prognosis.encoders.weights import load_by_name
from wsi_prognosis.models.backbone import IMAGENET_MEAN, IMAGENET_STD

LICENCE = ("CC-BY-NC-ND 4.0, gated: accept on Hugging Face (institutional e-mail); non-commercial academic research "
           "only, no redistribution of the weights")


def build_uni(depth: int = 24) -> nn.Module:
    """UNI: ViT-L/16, width 1024, 16 heads, LayerScale, GELU MLP; (N, 3, 224, 224) -> (N, 1024) class token."""
    return build_timm_vit("vit_large_patch16_224", img_size=224, patch_size=16, init_values=1e-5, depth=depth)


def build_uni2_h(depth: int = 24) -> nn.Module:
    """UNI 2-h: ViT-H/14, width 1536, 24 heads, SwiGLU MLP (packed, 8192 -> 4096), SiLU, LayerScale, 8 register
    tokens, position embedding for the patches only; (N, 3, 224, 224) -> (N, 1536) class token."""
    import timm

    return build_timm_vit("vit_giant_patch14_224", img_size=224, patch_size=14, depth=depth, num_heads=24,
                          embed_dim=1536, mlp_ratio=2.66667 * 2, mlp_layer=timm.layers.SwiGLUPacked, act_layer=nn.SiLU,
                          reg_tokens=8, no_embed_class=True, init_values=1e-5)


class AttentionalPooler(nn.Module):
    """CoCa's attentional pooler: `queries` learned queries attend over the trunk's tokens.
    (N, T, context_dim) -> (N, queries, dim)."""

    def __init__(self, dim: int = 768, context_dim: int = 1024, heads: int = 8, queries: int = 1) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.randn(queries, dim))
        self.ln_k = nn.LayerNorm(context_dim)
        self.ln_q = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, t, width = x.shape
        return x.reshape(n, t, self.heads, width // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.to_q(self.ln_q(self.query)).expand(x.shape[0], -1, -1)
        k, v = self.to_kv(self.ln_k(x)).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))  # scale 1/sqrt(head dim)
        return self.to_out(out.transpose(1, 2).reshape(q.shape))


class ConchV15Vision(nn.Module):
    """CONCH v1.5's vision tower: ViT-L/16 trunk at 448 px -> attentional pooler (1 query) -> LayerNorm.
    (N, 3, 448, 448) -> (N, 768)."""

    def __init__(self, depth: int = 24) -> None:
        super().__init__()
        self.trunk = build_timm_vit("vit_large_patch16_224", img_size=448, patch_size=16, init_values=1.0, depth=depth)
        self.attn_pool_contrast = AttentionalPooler(dim=768, context_dim=1024, heads=8, queries=1)
        self.ln_contrast = nn.LayerNorm(768)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk.forward_features(x)                 # (N, 1 + 28 * 28, 1024), after the final norm
        return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])


def build_conch_v15(depth: int = 24) -> nn.Module:
    return ConchV15Vision(depth=depth)


def resample_square_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + g * g, D) -> (1, 1 + grid * grid, D) exactly as CONCH v1.5's forward does at run time: the class
    entry kept, the patch grid resized bicubically with `scale_factor=(grid + 0.1) / g` (align_corners=False)."""
    old = math.isqrt(pos_embed.shape[1] - 1)
    if old == grid:
        return pos_embed
    patches = pos_embed[:, 1:].float().reshape(1, old, old, -1).permute(0, 3, 1, 2)
    scale = (grid + 0.1) / old
    patches = F.interpolate(patches, scale_factor=(scale, scale), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)
    return torch.cat([pos_embed[:, :1].float(), patches], dim=1).to(pos_embed.dtype)


def load_conch_v15(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, *, arch: str) -> None:
    """Strict load by the published names; the release's square patch-position grid (14 x 14) is resampled
    to this network's (28 x 28) first."""
    state = dict(state)
    key = "trunk.pos_embed"
    own = model.state_dict()[key]
    theirs = state.get(key)
    if theirs is not None and theirs.ndim == 3 and theirs.shape[-1] == own.shape[-1] and theirs.shape[1] != own.shape[1]:
        old = math.isqrt(theirs.shape[1] - 1)
        if old * old == theirs.shape[1] - 1:
            state[key] = resample_square_pos_embed(theirs, model.trunk.patch_embed.grid_size[0])
    load_by_name(model, state, path, arch=arch)


@register_encoder("uni")
def uni() -> EncoderSpec:
    arch = "uni (timm vit_large_patch16_224, LayerScale)"
    return EncoderSpec(
        name="uni", summary="UNI (Mahmood Lab, ViT-L/16, 100M tiles of Mass-100K; frozen)",
        construction="timm vit_large_patch16_224(img_size=224, patch_size=16, init_values=1e-5, num_classes=0): ViT-L/16, "
                     "24 blocks, width 1024, 16 heads, LayerScale, GELU MLP x4",
        dim=1024, input_px=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, mpp=0.5, licence=LICENCE,
        build=partial(build_uni, depth=24), weights=hf_weights("MahmoodLab/UNI", "pytorch_model.bin", gated=True),
        load_state=partial(load_by_name, arch=arch),
        embedding="class token after the final LayerNorm (1024)")


@register_encoder("uni2-h")
def uni2_h() -> EncoderSpec:
    arch = "uni2-h (timm vit_giant_patch14_224 as ViT-H/14, SwiGLU, 8 registers)"
    return EncoderSpec(
        name="uni2-h", summary="UNI 2-h (Mahmood Lab, ViT-H/14 with 8 registers, 200M H&E and IHC tiles; frozen)",
        construction="timm vit_giant_patch14_224(img_size=224, patch_size=14, depth=24, num_heads=24, embed_dim=1536, "
                     "mlp_ratio=5.33334, mlp_layer=SwiGLUPacked, act_layer=SiLU, reg_tokens=8, no_embed_class=True, "
                     "init_values=1e-5, num_classes=0)",
        dim=1536, input_px=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, mpp=0.5, licence=LICENCE,
        build=partial(build_uni2_h, depth=24), weights=hf_weights("MahmoodLab/UNI2-h", "pytorch_model.bin", gated=True),
        load_state=partial(load_by_name, arch=arch),
        embedding="class token after the final LayerNorm (1536); the 8 register tokens are left out")


@register_encoder("conch-v1.5")
def conch_v15() -> EncoderSpec:
    arch = "conch-v1.5 (ViT-L/16 trunk + attentional pooler)"
    return EncoderSpec(
        name="conch-v1.5",
        summary="CONCH v1.5 vision tower (Mahmood Lab, ViT-L/16 from UNI, vision-language; 448 px; frozen). Tile with "
                "tiling.tile_px=448 at 0.5 µm/px: smaller tiles would be enlarged to 448 px",
        construction="timm vit_large_patch16_224(img_size=448, patch_size=16, init_values=1.0, num_classes=0) as `trunk` "
                     "+ attentional pooler (1 query, 8 heads, 1024 -> 768, `attn_pool_contrast`) + LayerNorm "
                     "(`ln_contrast`); the release's 14x14 position grid resampled bicubically to 28x28 as its forward does",
        dim=768, input_px=448, mean=IMAGENET_MEAN, std=IMAGENET_STD, mpp=0.5, licence=LICENCE,
        build=partial(build_conch_v15, depth=24),
        weights=hf_weights("MahmoodLab/conchv1_5", "pytorch_model_vision.bin", gated=True),
        load_state=partial(load_conch_v15, arch=arch),
        embedding="attentional pooling of all trunk tokens, then LayerNorm (768; no contrastive projection)")
