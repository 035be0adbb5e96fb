"""The LightningModules of ensemble members. `MilModule`: a timm backbone scores tiles, pooling makes the slide
score, and the loss (`model.loss`) compares it with the outcome (multiple-instance learning):
`bce` against the slide's DoMore good/poor label (the default), `cox` the negative Cox partial
likelihood of the batch's slides (time and event of every training patient: ranks within the
poor and between all, not only the two extremes), `bce+cox` both (`cox_weight` scales Cox).
With stain normalisation each bag's slide matrix (`models.stain`) is applied before augmentation.

Each validation epoch scores every tuning slide on fixed tiles and logs `tune_c_index` (slide
score against the patient's time/event) and `tune_auc_extremes` (good vs poor among tuning
patients whose outcome meets the training label definition); the checkpoint callback keeps
the best epoch by the configured one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from wsi_prognosis.models.augment import augment_batch
from wsi_prognosis.models.backbone import Preprocessing, build_backbone, tiles_to_tensor
from wsi_prognosis.models.metrics import tuning_metrics
from wsi_prognosis.models.pooling import pool_tile_logits
from wsi_prognosis.models.stain import apply_od_matrix

METRIC_KEYS = {"c_index": "tune_c_index", "auc_extremes": "tune_auc_extremes"}
LOSSES = ("bce", "cox", "bce+cox")


def cox_partial_likelihood(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Cox log partial likelihood (Breslow ties) of the batch, per event; 0 without events.

    risk: (B,) log-hazard scores (higher = worse); time, event: (B,). The risk set of a patient
    is every patient in the batch still followed at its time.
    """
    order = torch.argsort(time, descending=True)
    r, e = risk[order], event[order].to(risk.dtype)
    log_risk_set = torch.logcumsumexp(r, dim=0)
    n_events = e.sum()
    if n_events == 0:
        return risk.sum() * 0.0
    return -((r - log_risk_set) * e).sum() / n_events


def bag_tiles(bags: torch.Tensor, stain: torch.Tensor | None, augment: torch.Tensor | None) -> torch.Tensor:
    """(B, N, H, W, 3) uint8 bags -> (B*N, H, W, 3) tiles, each slide's stain matrix (B, 3, 3) applied first,
    then the loader's per-tile augmentation (B, N, N_PARAMS): the pixel members' one preprocessing step."""
    b, n = bags.shape[:2]
    tiles = bags.reshape(b * n, *bags.shape[2:])
    if stain is not None:
        tiles = apply_od_matrix(tiles, stain.repeat_interleave(n, dim=0))
    if augment is not None:
        tiles = augment_batch(tiles, augment.reshape(b * n, -1))
    return tiles


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05   # of all steps, linear warm-up before the cosine decay
    min_lr_ratio: float = 0.01      # cosine decays to lr * this


class TunedModule(pl.LightningModule):
    """What every member's LightningModule shares: the outcome loss, the tuning metrics of each
    validation epoch (C-index, good-vs-poor AUC), the history kept in checkpoints, AdamW with warm-up
    and cosine decay. Subclasses say how a batch becomes slide logits (`slide_logits`) and how one
    tuning slide is scored (`validation_step` appends (slide index, score) to `self._val`)."""

    def __init__(self, optim: dict[str, Any], loss: str = "bce", cox_weight: float = 1.0) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"model.loss={loss!r}: use one of {LOSSES}")
        self.loss_name, self.cox_weight = loss, float(cox_weight)
        self.optim = OptimConfig(**optim)
        self._val: list[tuple[int, float]] = []
        self.history: list[dict[str, float]] = []
        self.last_tune_scores: Any = None   # DataFrame of the latest tuning epoch (slide_id, ..., score)

    def outcome_loss(self, logits: torch.Tensor, y: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
        """BCE against the good/poor labels (y NaN: no label, Cox only) and/or the batch's Cox partial likelihood."""
        loss = logits.sum() * 0.0
        if self.loss_name in ("bce", "bce+cox"):
            labelled = ~torch.isnan(y)
            if labelled.any():
                loss = loss + F.binary_cross_entropy_with_logits(logits[labelled], y[labelled].float())
        if self.loss_name in ("cox", "bce+cox"):
            loss = loss + self.cox_weight * cox_partial_likelihood(logits, time, event)
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        return loss

    def on_validation_epoch_end(self) -> None:
        local = torch.tensor(self._val, dtype=torch.float64, device=self.device).reshape(-1, 2)
        self._val = []
        gathered = self.all_gather(local).reshape(-1, 2).cpu().numpy() if self.trainer.world_size > 1 else local.cpu().numpy()
        datamodule = self.trainer.datamodule
        outcomes = datamodule.tune_outcomes if datamodule is not None else None
        metrics = {"c_index": float("nan"), "auc_extremes": float("nan")}
        if outcomes is not None and len(gathered):
            score_by_slide: dict[int, float] = {}
            for i, s in gathered:  # DistributedSampler pads with repeats: keep one score per slide
                score_by_slide[int(i)] = float(s)
            idx = np.array(sorted(score_by_slide))
            scores = np.array([score_by_slide[i] for i in idx])
            table = outcomes.iloc[idx]
            metrics = tuning_metrics(scores, table["time"].to_numpy(), table["event"].to_numpy(), table["label"].to_numpy())
            self.last_tune_scores = table.assign(score=scores).reset_index(drop=True)
        for key, name in METRIC_KEYS.items():
            value = metrics[key]
            # identical on every rank (gathered above); sync_dist only silences Lightning's DDP warning
            self.log(name, value, prog_bar=True, sync_dist=self.trainer.world_size > 1)
        if not self.trainer.sanity_checking:
            self.history.append({"epoch": int(self.current_epoch), **{k: float(v) for k, v in metrics.items()}})

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: every trainable parameter at `optim.lr` (a fine-tuned encoder
        overrides this to train its encoder at a lower rate). The schedule scales each group's own rate."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": self.optim.lr}]

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(self.param_groups(), lr=self.optim.lr, weight_decay=self.optim.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.optim.warmup_fraction * total)
        floor = self.optim.min_lr_ratio

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["wsi_history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("wsi_history", []))


class MilModule(TunedModule):
    """A timm backbone trained on pixels: tile logits -> pooled slide probability -> the outcome loss."""

    def __init__(self, arch: str, preprocessing: dict[str, Any], pooling: dict[str, Any],
                 optim: dict[str, Any], pretrained_path: str | None = None, eval_chunk: int = 256,
                 loss: str = "bce", cox_weight: float = 1.0) -> None:
        super().__init__(optim, loss, cox_weight)
        self.stain_norm = "stain" in preprocessing
        self.save_hyperparameters()
        self.backbone = build_backbone(arch, pretrained_path=pretrained_path).to(memory_format=torch.channels_last)
        self.prep = Preprocessing.from_dict(preprocessing)
        self.pooling = dict(pooling)
        self.eval_chunk = eval_chunk

    def tile_logits(self, tiles_uint8: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 (or float in [0, 255]) -> (N,) logits."""
        return self.backbone(tiles_to_tensor(tiles_uint8, self.prep)).float().reshape(-1)

    def forward(self, bags_uint8: torch.Tensor, augment: torch.Tensor | None = None,
                stain: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, H, W, 3) uint8 bags -> (B,) slide probabilities; `augment` (B, N, N_PARAMS) colour and
        blur parameters from the loader (training only), applied to the whole batch at once; `stain`
        (B, 3, 3) each slide's stain-normalisation matrix (applied first, when the member uses one)."""
        b, n = bags_uint8.shape[:2]
        tiles = bag_tiles(bags_uint8, stain if self.stain_norm else None, augment)
        return pool_tile_logits(self.tile_logits(tiles).reshape(b, n), **self.pooling)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        """batch: (tiles, y, slide index, augmentation parameters, stain matrix, time, event), as
        `data.TrainBags` makes them; y is NaN for a patient without a good/poor label (Cox only)."""
        tiles, y, _, augment, stain, time, event = batch
        prob = self(tiles, augment, stain).clamp(1e-6, 1 - 1e-6)
        return self.outcome_loss(torch.logit(prob), y, time, event)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        tiles, index, stain = batch
        tiles = tiles[0]
        if self.stain_norm:
            tiles = apply_od_matrix(tiles, stain[0])
        logits = torch.cat([self.tile_logits(tiles[s:s + self.eval_chunk]) for s in range(0, len(tiles), self.eval_chunk)])
        score = pool_tile_logits(logits, **self.pooling)
        self._val.append((int(index[0]), float(score)))
