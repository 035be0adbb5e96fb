"""The fine-tuning recipe of `train` (`model.finetune=all|last:N`): a pretrained encoder and a feature head,
trained end to end on pixel bags.

Loads the encoder from the registry with its base weights (verified as for `embed`), marks what trains
(`encoders.blocks`: everything, or the last N blocks and what follows them), reads the same pixel bags as
a member trained from scratch (`models.data`: augmentation on the device, per-slide stain matrices) and
hands the common training loop a `FinetuneModule`. No cached features are needed.

The head's input standardisation is fitted from a first pass of the base encoder (frozen, eval mode) over a
fixed sample of training tiles, not left at identity: it puts a fine-tuned member's head on the same footing
as a frozen encoder's member (same `model.head.*` and `model.optim.*` mean the same thing: unit-scale inputs
for the first layer's init and weight decay), and a pretrained encoder's raw features can be far from unit
scale (EfficientNet-Lite's pooled features are positive with per-dimension means up to several units), which
would otherwise make the first steps of the head and the encoder's gradients depend on that scale. The pass
costs one inference over at most `STANDARDISATION_TILES` tiles; it is skipped when a checkpoint is resumed
(the statistics are buffers of the head, in the checkpoint).

member.json records the encoder's name, base weights' sha256 and preprocessing as a frozen member does,
plus `finetuned` ("all" | "last:N") and, once training has finished, `finetuned_sha256`: the sha256 of the
member's own encoder tensors (`finetune_lit.state_sha256`). best.pt holds the whole fine-tuned encoder and
the head (also for last:N: the frozen blocks cost disk, but a member then scores without its base weights).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from wsi_prognosis.encoders.blocks import FinetuneMode, block_layout, enable_grad_checkpointing, parse_finetune, trainable_names
from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.models.data import BagDataModule, TilePixels, eval_tile_index
from wsi_prognosis.models.finetune_lit import FinetuneModule, FinetuneNetwork, encoder_state, network_for, state_sha256
from wsi_prognosis.models.heads import HeadConfig, feature_statistics

if TYPE_CHECKING:
    from wsi_prognosis.encoders.registry import LoadedEncoder
    from wsi_prognosis.models.config import TrainConfig
    from wsi_prognosis.models.training import Prepared

log = logging.getLogger(__name__)

STANDARDISATION_TILES = 1024     # training tiles (evenly spread over slides) of the standardisation pass
PASS_BATCH = 64


def mark_trainable(loaded: "LoadedEncoder", finetune: FinetuneMode, *, grad_checkpointing: bool) -> str:
    """Mark what trains in the loaded encoder (base weights): every parameter (`all`) or the last N blocks and
    what follows them (`last:N`); switch on gradient checkpointing for a ViT when asked. `ConfigurationError`
    naming the encoder when `last:N` cannot be applied to it. Returns the network's family (vit | cnn | "")."""
    name = loaded.spec.name
    model = loaded.model
    layout = block_layout(model, name) if finetune.mode == "last" else _layout_if_any(model, name)
    trained = trainable_names(model, finetune, layout)
    for param_name, param in model.named_parameters():
        param.requires_grad_(param_name in trained)
    if not trained:
        raise ConfigurationError(f"model.finetune={finetune}: encoder={name} has no parameter to train. Fix: "
                                 "model.finetune=all, or none.")
    checkpointing = grad_checkpointing and enable_grad_checkpointing(model, layout)
    n_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    log.info("encoder %s: fine-tuning %s (%d of %d parameters%s)", name, finetune, n_trained, n_all,
             ", gradient checkpointing" if checkpointing else "")
    return layout.family if layout is not None else ""


def _layout_if_any(model: torch.nn.Module, name: str) -> Any:
    try:
        return block_layout(model, name)
    except ConfigurationError:  # `all` needs no blocks; only checkpointing asks which family it is
        return None


def _pass_device(accelerator: str) -> torch.device:
    """Where the standardisation pass runs: this process's GPU when training uses one (LOCAL_RANK under DDP)."""
    if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda"):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


@torch.no_grad()
def first_pass_statistics(network: FinetuneNetwork, bags: list[Any], *, device: torch.device,
                          max_tiles: int = STANDARDISATION_TILES) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and SD per embedding dimension of the base encoder over a fixed sample of the training slides' tiles
    (evenly spaced within each slide, about `max_tiles` in all, stain-normalised as training sees them, not
    augmented)."""
    from wsi_prognosis.models.stain import apply_od_matrix

    per_slide = max(1, int(np.ceil(max_tiles / max(1, len(bags)))))
    pixels = TilePixels(bags, cache_mb=0)
    network.eval().to(device)  # FinetuneModule sets the training modes again
    features = []
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for i, bag in enumerate(bags):
            tiles = torch.from_numpy(np.ascontiguousarray(pixels.read(i, eval_tile_index(bag.n_tiles, per_slide))))
            x: torch.Tensor = tiles.to(device)
            if bag.stain is not None:
                x = apply_od_matrix(x, torch.from_numpy(bag.stain))
            features += [network.embed(x[s:s + PASS_BATCH]).float().cpu() for s in range(0, len(x), PASS_BATCH)]
    network.to("cpu")
    return feature_statistics(features)


def prepare_finetune(config: "TrainConfig", train_table: pd.DataFrame, tune_table: pd.DataFrame) -> "Prepared":
    from wsi_prognosis.encoders import check_tile_mpp, load_encoder
    from wsi_prognosis.models.training import Prepared, pixel_bags, stain_normalised, tile_spec_from_store

    finetune = parse_finetune(config.model.finetune)
    if config.features is not None:
        log.info("%s: fine-tuning reads pixels; features=%s is not used", config.member, config.features)
    loaded = load_encoder(config.encoder.name, weights=config.encoder.weights)
    head = HeadConfig(**config.model.head)
    # the blocks are checked before any tile is read: a wrong last:N fails at once
    family = mark_trainable(loaded, finetune, grad_checkpointing=config.model.grad_checkpointing)
    res = config.resolution
    train_bags, tune_bags, left_out, tile_px, mpp = pixel_bags(config, train_table, tune_table)
    check_tile_mpp(loaded.spec, mpp, res, tile_px=tile_px)  # the encoder must see tissue at the scale it learnt
    network = network_for(loaded.spec, loaded.model, tile_px=tile_px, head=head, channels_last=family == "cnn")
    preprocessing: dict[str, Any] = {"tile_px": tile_px, "mpp": mpp, **loaded.spec.preprocessing()}
    train_bags, tune_bags, stain_unfitted = stain_normalised(config, train_bags, tune_bags, preprocessing)
    resuming = config.resume and (config.member_dir / "last.ckpt").is_file()

    def build() -> tuple[pl.LightningDataModule, pl.LightningModule]:
        if not resuming:
            mean, std = first_pass_statistics(network, train_bags, device=_pass_device(config.trainer.accelerator))
            network.head.set_standardisation(mean, std)
        module = FinetuneModule(network, config.model.optim, lr_scale=config.model.finetune_lr_scale,
                                stain_norm="stain" in preprocessing, loss=config.model.loss,
                                cox_weight=config.model.cox_weight)
        return BagDataModule(train_bags, tune_bags, config.data), module

    def on_weights(state: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"encoder": {"finetuned_sha256": state_sha256(encoder_state(state))}}

    record = {
        "arch": f"finetuned-head-{head.pooling}", "pooling": {"method": head.pooling},
        "encoder": {**loaded.identity, "finetuned": str(finetune), "finetuned_sha256": None},
        "head": {**head.to_dict(), "dim": int(loaded.spec.dim)}, "preprocessing": preprocessing,
        "tile_spec": tile_spec_from_store(train_bags[0].tiles_file), "stain_unfitted": stain_unfitted,
    }
    n_tiles = int(sum(b.n_tiles for b in train_bags))
    return Prepared(train_bags, tune_bags, left_out, n_tiles, record, build, "network.", on_weights)


__all__ = ["STANDARDISATION_TILES", "first_pass_statistics", "mark_trainable", "prepare_finetune"]
