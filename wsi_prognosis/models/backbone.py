"""One way to make a network: every backbone comes from `build_backbone` around `timm.create_model`.

Weights are never downloaded at run time: a backbone is random-initialised (the default, as in
DoMore) or loaded from a local file. The preprocessing a network expects (mean, std) comes from
timm's pretrained config and travels with the member into its checkpoint and the bundle, so
scoring prepares tiles exactly as training did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsi_prognosis.errors import ConfigurationError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How tiles become network input: uint8 RGB at `mpp` µm/px, `tile_px` square, then (x/255 - mean) / std."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    tile_px: int
    mpp: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        return cls(mean=tuple(float(v) for v in d["mean"]), std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
                   tile_px=int(d["tile_px"]), mpp=float(d["mpp"]))


def _timm():
    import timm  # deferred: importing timm costs a second

    return timm


def backbone_mean_std(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation timm records for `arch` (ImageNet's when it records none)."""
    timm = _timm()
    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except Exception:  # noqa: BLE001 - timm raises several types for unknown names
        cfg = None
    mean = tuple(getattr(cfg, "mean", None) or IMAGENET_MEAN) if cfg is not None else IMAGENET_MEAN
    std = tuple(getattr(cfg, "std", None) or IMAGENET_STD) if cfg is not None else IMAGENET_STD
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def build_backbone(arch: str, *, pretrained_path: str | None = None, **kwargs: Any) -> nn.Module:
    """A timm network with one output (the tile logit); random init unless `pretrained_path` is given.

    `pretrained_path` is a local state_dict file (a timm checkpoint); the classifier head is
    dropped from it because this network has its own one-logit head. Never touches the network.
    """
    timm = _timm()
    if arch not in timm.list_models():
        raise ConfigurationError(
            f"model.arch={arch!r} is not a timm architecture. Fix: pick one of timm.list_models(), "
            "e.g. mobilenetv2_100 (default) or test_efficientnet (tiny, for tests)."
        )
    options = {k: v for k, v in kwargs.items() if v is not None}  # None means "the model's default"
    model = timm.create_model(arch, pretrained=False, num_classes=1, **options)
    if pretrained_path:
        path = Path(pretrained_path)
        if not path.is_file():
            raise ConfigurationError(
                f"model.pretrained_path={path}: file not found. Fix: give a local state_dict file "
                "(weights are never downloaded) or pretrained_path=null to train from scratch."
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ConfigurationError(f"{path}: not a readable torch state_dict ({exc}).") from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        state = {k: v for k, v in state.items() if not _is_head_key(model, k)}
        missing, unexpected = model.load_state_dict(state, strict=False)
        backbone_missing = [k for k in missing if not _is_head_key(model, k)]
        if backbone_missing or unexpected:
            raise ConfigurationError(
                f"{path}: does not fit {arch} (missing {backbone_missing[:3]}, unexpected {list(unexpected)[:3]}). "
                "Fix: give weights saved from the same timm architecture."
            )
    return model


def _is_head_key(model: nn.Module, key: str) -> bool:
    head = model.get_classifier()
    for name, module in model.named_modules():
        if module is head:
            return key.startswith(name + ".")
    return False


def default_preprocessing(arch: str, *, tile_px: int, mpp: float) -> Preprocessing:
    mean, std = backbone_mean_std(arch)
    return Preprocessing(mean=mean, std=std, tile_px=int(tile_px), mpp=float(mpp))  # type: ignore[arg-type]


def tiles_to_tensor(tiles_uint8: "torch.Tensor", prep: Preprocessing) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 normalised, channels_last memory format."""
    x = tiles_uint8.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(prep.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)
