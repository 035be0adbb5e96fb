"""A member that fine-tunes its encoder: pixels -> encoder -> `FeatureHead`, trained end to end.

`FinetuneNetwork` is what the member's weights file holds: `embedder` (the runtime's `PreprocessedEncoder`
around the registry's network, so training prepares tiles exactly as `score` will: /255, resize to the
encoder's input px, its mean and std) and `head` (the same `FeatureHead` as a frozen encoder's member).
`FinetuneModule` trains it on the pixel bags of `models.data` (stain matrix, then the colour and blur
augmentation on the device, as `MilModule`), with the encoder's trained parameters at a lower learning rate
than the head (`model.finetune_lr_scale`). Which encoder parameters train is `encoders.blocks`'s answer for
`model.finetune`; the frozen ones keep the base weights bit for bit, and their modules stay in eval mode,
so BatchNorm running statistics of the frozen part do not drift either. Everything lives in the module
(nothing in globals), so DDP processes rebuild the same thing.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from wsi_prognosis.encoders.runtime import PreprocessedEncoder
from wsi_prognosis.models.heads import FeatureHead, HeadConfig
from wsi_prognosis.models.lit import TunedModule, bag_tiles
from wsi_prognosis.models.stain import apply_od_matrix

log = logging.getLogger(__name__)

ENCODER_PREFIX = "embedder.encoder."      # of the encoder's tensors in a fine-tuned member's weights file


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over tensor names and bytes in order: the identity of a fine-tuned member's own encoder weights
    (independent of memory layout and of the file they are saved in)."""
    digest = hashlib.sha256()
    for key, value in state.items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def encoder_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's own tensors (registry names) out of a fine-tuned member's weights (`FinetuneNetwork`)."""
    return {k[len(ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}


class FinetuneNetwork(nn.Module):
    """uint8 (or float in [0, 255]) tiles -> embeddings (`embed`) -> slide logits, tile logits, weights (`forward`)."""

    def __init__(self, encoder: nn.Module, *, mean: tuple[float, ...], std: tuple[float, ...], input_px: int,
                 tile_px: int, dim: int, head: HeadConfig, channels_last: bool = False) -> None:
        super().__init__()
        if channels_last:
            encoder = encoder.to(memory_format=torch.channels_last)
        self.embedder = PreprocessedEncoder(encoder, mean=mean, std=std, input_px=input_px, tile_px=tile_px,
                                            channels_last=channels_last)
        self.head = FeatureHead(dim, head)

    @property
    def encoder(self) -> nn.Module:
        return self.embedder.encoder

    def embed(self, tiles: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) tiles -> (N, dim) float32 embeddings."""
        return self.embedder(tiles)

    def forward(self, bags: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """(B, N, H, W, 3) bags -> the head's (slide logits (B,), tile logits (B, N), pooling weights (B, N))."""
        b, n = bags.shape[:2]
        features = self.embed(bags.reshape(b * n, *bags.shape[2:])).reshape(b, n, -1)
        return self.head(features, mask)


def network_for(spec: Any, model: nn.Module, *, tile_px: int, head: HeadConfig,
                channels_last: bool = False) -> FinetuneNetwork:
    """The fine-tuned network of registry entry `spec` around `model` (its architecture, any weights): the same
    construction in training and when a bundle loads the member."""
    return FinetuneNetwork(model, mean=tuple(spec.mean), std=tuple(spec.std), input_px=int(spec.input_px),
                           tile_px=int(tile_px), dim=int(spec.dim), head=head, channels_last=channels_last)


def frozen_subtrees(model: nn.Module) -> list[nn.Module]:
    """The largest submodules of `model` that hold weights or buffers of which none trains: they run in eval
    mode during training (BatchNorm statistics and dropout of the frozen part as in the base encoder)."""
    out: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        params = list(module.parameters())
        holds = bool(params) or any(True for _ in module.buffers())
        if holds and not any(p.requires_grad for p in params):
            out.append(module)
            return
        for child in module.children():
            visit(child)

    visit(model)
    return out


class FinetuneModule(TunedModule):
    """The LightningModule of a fine-tuned member. The network comes built (`FinetuneNetwork`, with the base
    weights and the trainable parameters marked): `finetune_training.build_network` makes it from the registry."""

    def __init__(self, network: FinetuneNetwork, optim: dict[str, Any], *, lr_scale: float = 0.1,
                 stain_norm: bool = False, eval_chunk: int = 128, loss: str = "bce", cox_weight: float = 1.0) -> None:
        super().__init__(optim, loss, cox_weight)
        self.save_hyperparameters(ignore=["network"])
        self.network = network
        self.lr_scale, self.stain_norm, self.eval_chunk = float(lr_scale), bool(stain_norm), int(eval_chunk)
        self._frozen = frozen_subtrees(network.encoder)
        self.train()  # Lightning keeps the modes it is given: set them here, frozen part in eval mode

    def train(self, mode: bool = True) -> "FinetuneModule":
        super().train(mode)
        for module in self._frozen:
            module.train(False)
        return self

    def on_fit_start(self) -> None:
        if self._frozen:  # the frozen part is in eval mode on purpose; Lightning would warn about it every fit
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")

    def param_groups(self) -> list[dict[str, Any]]:
        encoder = [p for p in self.network.encoder.parameters() if p.requires_grad]
        head = [p for p in self.network.head.parameters() if p.requires_grad]
        return [{"params": head, "lr": self.optim.lr},
                {"params": encoder, "lr": self.optim.lr * self.lr_scale}]

    def forward(self, bags: torch.Tensor, augment: torch.Tensor | None = None,
                stain: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, H, W, 3) uint8 bags -> (B,) slide logits; `stain` (B, 3, 3) each slide's matrix (members trained
        with stain normalisation), then `augment` (B, N, N_PARAMS) from the loader (training only)."""
        b, n = bags.shape[:2]
        tiles = bag_tiles(bags, stain if self.stain_norm else None, augment)
        return self.network(tiles.reshape(b, n, *tiles.shape[1:]))[0]

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        """batch: (tiles, y, slide index, augmentation parameters, stain matrix, time, event) of `data.TrainBags`."""
        tiles, y, _, augment, stain, time, event = batch
        return self.outcome_loss(self(tiles, augment, stain).float(), y, time, event)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """One tuning slide on its fixed tiles (`data.EvalBags`), embedded in chunks, then the head on all of them."""
        tiles, index, stain = batch
        tiles = tiles[0]
        if self.stain_norm:
            tiles = apply_od_matrix(tiles, stain[0])
        features = torch.cat([self.network.embed(tiles[s:s + self.eval_chunk])
                              for s in range(0, len(tiles), self.eval_chunk)])
        slide_logit = self.network.head(features.float())[0]
        self._val.append((int(index[0]), float(torch.sigmoid(slide_logit))))


__all__ = ["ENCODER_PREFIX", "FinetuneModule", "FinetuneNetwork", "encoder_state", "frozen_subtrees", "network_for", "state_sha256"]
