"""Encoders without pretrained weights: `none` (DoMore's own way), `random-cnn` and `random-vit-s` (tests,
smoke runs).

`none` is not an encoder at all: members train a timm CNN (`model.arch`) from scratch, end to end on
pixels, as before the registry existed; it is listed so `encoder=none` reads like the other choices.
`random-cnn` is timm's tiny `test_efficientnet` with a fixed seed, so every process builds the same
weights: the whole feature flow runs in seconds in the tests. `random-vit-s` is the same idea for the ViT
path of the named foundation encoders: a ViT-S/16 cut to 4 blocks at 112 px (49 patches), fixed seed, class
token — cheap enough on 2 CPU cores for the learning benchmark; it learns nothing useful.
"""

from __future__ import annotations

from wsi_prognosis.encoders.registry import SCRATCH, EncoderSpec, register_encoder
from wsi_prognosis.models.backbone import IMAGENET_MEAN, IMAGENET_STD

RANDOM_SEED = 20260101


def _no_network():
    raise RuntimeError("encoder=none has no network of its own: members build model.arch")


def build_random_cnn():
    import timm
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return timm.create_model("test_efficientnet", pretrained=False, num_classes=0)


def build_random_vit_s():
    import timm
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=112, depth=4)


@register_encoder("none")
def none() -> EncoderSpec:
    return EncoderSpec(
        name="none", summary="no pretrained encoder: a timm CNN (model.arch) trained from scratch on pixels",
        construction="timm model.arch (default mobilenetv2_100), random init, one logit per tile", dim=0,
        input_px=0, mean=IMAGENET_MEAN, std=IMAGENET_STD, mpp=None, licence="-", build=_no_network, kind=SCRATCH,
        embedding="none (tile logits)")


@register_encoder("random-cnn")
def random_cnn() -> EncoderSpec:
    return EncoderSpec(
        name="random-cnn", summary="tiny random CNN (fixed seed): tests and smoke runs only, learns nothing useful",
        construction=f"timm test_efficientnet(num_classes=0), random init with seed {RANDOM_SEED}", dim=256,
        input_px=64, mean=IMAGENET_MEAN, std=IMAGENET_STD, mpp=None, licence="-", build=build_random_cnn)


@register_encoder("random-vit-s")
def random_vit_s() -> EncoderSpec:
    return EncoderSpec(
        name="random-vit-s",
        summary="small random ViT (fixed seed): tests, smoke runs and the learning benchmark only; learns nothing useful",
        construction=f"timm vit_small_patch16_224(img_size=112, depth=4, num_classes=0): ViT-S/16, 4 blocks, width 384, "
                     f"6 heads, random init with seed {RANDOM_SEED}",
        dim=384, input_px=112, mean=IMAGENET_MEAN, std=IMAGENET_STD, mpp=None, licence="-", build=build_random_vit_s,
        embedding="class token after the final LayerNorm (384)")
