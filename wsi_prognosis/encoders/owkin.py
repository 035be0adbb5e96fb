"""Owkin's Phikon-v2, built with timm from its Hugging Face `transformers` weights.

Phikon-v2 is a DINOv2 ViT-L/16 (24 blocks, width 1024, 16 heads, LayerScale, GELU MLP x4, no register
tokens) published as a `transformers` `Dinov2Model` (`model.safetensors` in owkin/phikon-v2). `transformers`
is not a dependency of this project and is not needed: the same network is timm's `vit_large_patch16_224`
with LayerScale, and the published tensors map onto it one to one by name, except that `transformers` keeps
the attention's query, key and value as three matrices where timm keeps one `qkv` matrix (concatenated in
that order). The mapping below is checked in the published names first, so a file of another model is
refused naming its first tensor as that file spells it. The mask token (used only in pre-training) is not
part of the network. The embedding is `last_hidden_state[:, 0]`: the class token after the final LayerNorm.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import torch
from torch import nn

from wsi_prognosis.encoders.registry import EncoderSpec, register_encoder
from wsi_prognosis.encoders.vit import build_timm_vit, hf_weights
from wsi_prognosis.errors import EncoderError
from wsi_prognosis.models.backbone import IMAGENET_MEAN, IMAGENET_STD

# timm name -> transformers Dinov2Model name
_TOP = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
_BLOCK = {
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
    "attn.proj.weight": "attention.output.dense.weight", "attn.proj.bias": "attention.output.dense.bias",
    "ls1.gamma": "layer_scale1.lambda1",
    "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
    "mlp.fc1.weight": "mlp.fc1.weight", "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias",
    "ls2.gamma": "layer_scale2.lambda1",
}
_NOT_IN_NETWORK = ("embeddings.mask_token",)   # masked-image pre-training only
_OPTIONAL_PREFIX = "dinov2."                    # the same tensors saved from a task model


def published_names(timm_key: str) -> list[str]:
    """The Dinov2Model name(s) of one timm tensor: three for a fused `qkv` (query, key, value), else one."""
    if timm_key in _TOP:
        return [_TOP[timm_key]]
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", timm_key)
    if match:
        layer, rest = f"encoder.layer.{match.group(1)}.", match.group(2)
        if rest in ("attn.qkv.weight", "attn.qkv.bias"):
            part = rest.rsplit(".", 1)[1]
            return [f"{layer}attention.attention.{which}.{part}" for which in ("query", "key", "value")]
        if rest in _BLOCK:
            return [layer + _BLOCK[rest]]
    raise KeyError(f"timm tensor {timm_key!r} has no Phikon-v2 name")


def load_phikon_v2(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, *, arch: str) -> None:
    """Strict load of the published Dinov2Model tensors into timm's ViT: every published tensor present with
    its shape, nothing else; `EncoderError` naming the first that does not fit, in the file's own names."""
    theirs = {k.removeprefix(_OPTIONAL_PREFIX): v for k, v in state.items()}
    theirs = {k: v for k, v in theirs.items() if k not in _NOT_IN_NETWORK}
    own = model.state_dict()
    expected: dict[str, tuple[int, ...]] = {}
    for key, value in own.items():
        names = published_names(key)
        shape = (value.shape[0] // len(names), *value.shape[1:])
        expected.update({name: tuple(shape) for name in names})
    for key, value in theirs.items():
        if key in expected and tuple(value.shape) != expected[key]:
            raise EncoderError(f"{path}: tensor {key!r} has shape {tuple(value.shape)} where {arch} needs "
                               f"{expected[key]}. Fix: give the weights of this encoder.")
    missing = [k for k in expected if k not in theirs]
    unexpected = [k for k in theirs if k not in expected]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise EncoderError(f"{path}: does not fit {arch} (Hugging Face Dinov2Model names): {what} ({len(missing)} "
                           f"missing, {len(unexpected)} unexpected tensors). Fix: give owkin/phikon-v2's "
                           "model.safetensors.")
    mapped = {key: torch.cat([theirs[n] for n in published_names(key)], dim=0) for key in own}
    model.load_state_dict(mapped, strict=True)


def build_phikon_v2(depth: int = 24) -> nn.Module:
    """(N, 3, 224, 224) -> (N, 1024) class token."""
    return build_timm_vit("vit_large_patch16_224", img_size=224, patch_size=16, init_values=1.0, depth=depth)


@register_encoder("phikon-v2")
def phikon_v2() -> EncoderSpec:
    return EncoderSpec(
        name="phikon-v2", summary="Phikon-v2 (Owkin, DINOv2 ViT-L/16, 460M tiles of PANCAN-XL; frozen)",
        construction="timm vit_large_patch16_224(img_size=224, init_values=1.0, num_classes=0): ViT-L/16, 24 blocks, "
                     "width 1024, 16 heads, LayerScale, GELU MLP x4; the transformers Dinov2Model tensors renamed, "
                     "query/key/value concatenated into qkv",
        dim=1024, input_px=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, mpp=0.5,
        licence="Owkin non-commercial licence (LICENSE.pdf on the model page): non-commercial research only",
        build=partial(build_phikon_v2, depth=24),
        weights=hf_weights("owkin/phikon-v2", "model.safetensors", gated=False),
        load_state=partial(load_phikon_v2, arch="phikon-v2 (DINOv2 ViT-L/16)"),
        embedding="class token after the final LayerNorm, i.e. last_hidden_state[:, 0] (1024)")
