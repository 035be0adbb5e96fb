"""What the named ViT foundation encoders share: a timm ViT built for a fixed input, the embeddings that are
not a plain class token, and loading a published state dict into the part of a wrapper that holds it.

Each source module (`mahmood`, `paige`, `bioptimus`, `owkin`, `microsoft`) states its models' construction
arguments in its own functions; this module only holds the mechanics. Every build takes `depth`, so tests
can build a shallow copy with the true width, heads, MLP, LayerScale and register tokens and write random
weights under the published names (`tests/encoders/test_foundation.py`).

Every network is built for its input px with `dynamic_img_size=False`: the runtime always resizes tiles to
the encoder's input px, so position embeddings never need resampling at run time (and the ONNX graph stays
static). The weights are the same tensors either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsi_prognosis.encoders.registry import WeightsSource
from wsi_prognosis.encoders.weights import load_by_name


def hf_weights(repo: str, filename: str, *, gated: bool) -> WeightsSource:
    """Weights looked up in the local Hugging Face cache only, with the command that fetches them elsewhere."""
    if gated:
        fetch = (f"accept the licence on https://huggingface.co/{repo} with your own account, then `hf auth login` and "
                 f"`hf download {repo} {filename}` (huggingface-cli download on huggingface_hub < 1.0)")
    else:
        fetch = f"`hf download {repo} {filename}` (huggingface-cli download on huggingface_hub < 1.0)"
    return WeightsSource(hf_repo=repo, hf_file=filename, gated=gated, fetch=fetch)


def build_timm_vit(arch: str, **kwargs: Any) -> nn.Module:
    """timm's `arch` with random init, no classifier (`num_classes=0`), for a fixed input size; `kwargs`
    override the architecture's defaults (timm merges them into its model arguments)."""
    import timm

    kwargs.setdefault("num_classes", 0)
    kwargs.setdefault("dynamic_img_size", False)
    return timm.create_model(arch, pretrained=False, **kwargs)


class ClassAndPatchMean(nn.Module):
    """(N, 3, px, px) -> (N, 2 * width): the class token after the final norm, concatenated with the mean of
    the patch tokens (register tokens left out) — Virchow's embedding."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk.forward_features(x)            # (N, prefix + patches, width), normed
        patches = tokens[:, self.trunk.num_prefix_tokens:]  # class and register tokens are the prefix
        return torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=-1)


def load_into_trunk(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, *, arch: str) -> None:
    """Strict load by name into `model.trunk`: the published file holds the bare timm ViT, the wrapper only
    computes the embedding from its tokens."""
    load_by_name(model.trunk, state, path, arch=arch)


__all__ = ["ClassAndPatchMean", "build_timm_vit", "hf_weights", "load_into_trunk"]
