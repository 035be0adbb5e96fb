"""Bioptimus's H-optimus-0 and H-optimus-1.

Both are the same ViT-g/14 — 40 blocks, width 1536, 24 heads, SwiGLU MLP (packed, 8192 -> 4096), SiLU,
LayerScale, 4 register tokens, position embedding for the patches only — which is timm's
`vit_giant_patch14_reg4_dinov2` built for 224 px (`img_size=224`, as in their model cards and in
Bioptimus's own release notes, which spell the same network out with `GluMlp(gate_last=False)`). Their
`pytorch_model.bin` loads strictly into it with timm's names. The embedding is the class token (1536).
Both take 224 x 224 tiles at 0.5 µm/px, normalised with Bioptimus's own mean and std.

The two releases share one layout, so a file of one loads into the other: which weights were used is told by
the sha256 recorded in every feature store, and the Hugging Face cache lookup picks the named repo.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from wsi_prognosis.encoders.registry import EncoderSpec, register_encoder
from wsi_prognosis.encoders.vit import build_timm_vit, hf_weights
from wsi_prognosis.encoders.weights import load_by_name

MEAN = (0.707223, 0.578729, 0.703617)
STD = (0.211883, 0.230117, 0.177517)
CONSTRUCTION = ("timm vit_giant_patch14_reg4_dinov2(img_size=224, init_values=1e-5, num_classes=0): ViT-g/14, 40 blocks, "
                "width 1536, 24 heads, SwiGLUPacked MLP (mlp_ratio 5.33334), SiLU, reg_tokens=4, no_embed_class=True")


def build_h_optimus(depth: int = 40) -> nn.Module:
    """(N, 3, 224, 224) -> (N, 1536) class token."""
    return build_timm_vit("vit_giant_patch14_reg4_dinov2", img_size=224, init_values=1e-5, global_pool="token",
                          depth=depth)


@register_encoder("h-optimus-0")
def h_optimus_0() -> EncoderSpec:
    return EncoderSpec(
        name="h-optimus-0", summary="H-optimus-0 (Bioptimus, ViT-g/14 with 4 registers, 500k slides; frozen)",
        construction=CONSTRUCTION, dim=1536, input_px=224, mean=MEAN, std=STD, mpp=0.5,
        licence="Apache-2.0 (commercial use allowed)",
        build=partial(build_h_optimus, depth=40),
        weights=hf_weights("bioptimus/H-optimus-0", "pytorch_model.bin", gated=False),
        load_state=partial(load_by_name, arch="h-optimus-0 (timm vit_giant_patch14_reg4_dinov2)"),
        embedding="class token after the final LayerNorm (1536); the 4 register tokens are left out")


@register_encoder("h-optimus-1")
def h_optimus_1() -> EncoderSpec:
    return EncoderSpec(
        name="h-optimus-1", summary="H-optimus-1 (Bioptimus, ViT-g/14 with 4 registers, 1M slides; frozen)",
        construction=CONSTRUCTION, dim=1536, input_px=224, mean=MEAN, std=STD, mpp=0.5,
        licence="CC-BY-NC-ND 4.0, gated: accept on Hugging Face (academic access); non-commercial research only "
                "(commercial licences from Bioptimus)",
        build=partial(build_h_optimus, depth=40),
        weights=hf_weights("bioptimus/H-optimus-1", "pytorch_model.bin", gated=True),
        load_state=partial(load_by_name, arch="h-optimus-1 (timm vit_giant_patch14_reg4_dinov2)"),
        embedding="class token after the final LayerNorm (1536); the 4 register tokens are left out")
