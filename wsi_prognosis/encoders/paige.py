"""Paige's Virchow 2.

A timm ViT-H/14 (width 1280, 32 blocks, 16 heads) with a SwiGLU MLP (packed, 6832 -> 3416), SiLU, LayerScale
and 4 register tokens, built with the arguments of its model card's `config.json` (`vit_huge_patch14_224`,
`mlp_ratio=5.3375`, `reg_tokens=4`, `init_values=1e-5`); the card's `pytorch_model.bin` loads strictly into it
with timm's names. The card's embedding is the class token concatenated with the mean of the 256 patch tokens
(the 4 register tokens left out): 2 x 1280 = 2560, computed by `ClassAndPatchMean` around the ViT.

Virchow 2 was trained on tiles at four magnifications (5x, 10x, 20x, 40x: 2, 1, 0.5 and 0.25 µm/px); 0.5 is
its reference here and a grid at any of the four fits (`check_tile_mpp`). CC-BY-NC-ND 4.0, gated.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from wsi_prognosis.encoders.registry import EncoderSpec, register_encoder
from wsi_prognosis.encoders.vit import ClassAndPatchMean, build_timm_vit, hf_weights, load_into_trunk
from wsi_prognosis.models.backbone import IMAGENET_MEAN, IMAGENET_STD

LICENCE = ("CC-BY-NC-ND 4.0, gated: accept on Hugging Face (institutional e-mail); non-commercial academic research "
           "only, no redistribution of the weights")


def build_virchow2(depth: int = 32) -> nn.Module:
    """(N, 3, 224, 224) -> (N, 2560): class token and mean patch token of a ViT-H/14 with 4 registers."""
    import timm

    trunk = build_timm_vit("vit_huge_patch14_224", img_size=224, init_values=1e-5, reg_tokens=4, mlp_ratio=5.3375,
                           mlp_layer=timm.layers.SwiGLUPacked, act_layer=nn.SiLU, global_pool="", depth=depth)
    return ClassAndPatchMean(trunk)


@register_encoder("virchow2")
def virchow2() -> EncoderSpec:
    arch = "virchow2 (timm vit_huge_patch14_224, SwiGLU, 4 registers)"
    return EncoderSpec(
        name="virchow2", summary="Virchow 2 (Paige, ViT-H/14 with 4 registers, 3.1M slides at 2, 1, 0.5 and 0.25 µm/px; frozen)",
        construction="timm vit_huge_patch14_224(img_size=224, init_values=1e-5, reg_tokens=4, mlp_ratio=5.3375, "
                     "mlp_layer=SwiGLUPacked, act_layer=SiLU, global_pool='', num_classes=0): ViT-H/14, 32 blocks, "
                     "width 1280, 16 heads",
        dim=2560, input_px=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, mpp=0.5, mpp_mixed=(2.0, 1.0, 0.25),
        licence=LICENCE, build=partial(build_virchow2, depth=32),
        weights=hf_weights("paige-ai/Virchow2", "pytorch_model.bin", gated=True),
        load_state=partial(load_into_trunk, arch=arch),
        embedding="class token concatenated with the mean of the 256 patch tokens, registers left out (2 x 1280 = 2560)")
