"""Multiple-instance pooling: tile logits -> one slide probability in [0, 1].

A slide carries one label (good/poor) and many tiles; the network scores tiles and a pooling
rule turns the bag into a slide score that the slide label supervises. Parameter-free on
purpose, so a member's weights file is the backbone's state_dict alone.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from wsi_prognosis.errors import ConfigurationError

POOLING_METHODS = ("mean", "topk", "noisy_and")


def pool_tile_logits(logits: Tensor, method: str = "mean", **params: Any) -> Tensor:
    """Pool tile logits over the last axis into slide probabilities.

    Parameters
    ----------
    logits : (..., N) Tensor
        Tile logits of one bag (N tiles) or a batch of bags (B, N).
    method : {"mean", "topk", "noisy_and"}
        mean: mean tile probability. topk: mean probability of the `k` highest tiles
        (`k` an int, or `k_fraction` of the bag, at least 1). noisy_and (Kraus et al. 2016):
        a soft "most tiles are positive" with slope `a` (default 10) and threshold `b`
        (default 0.5), rescaled to [0, 1].

    Returns
    -------
    (...) Tensor, values in [0, 1]; higher = poorer prognosis.
    """
    if logits.shape[-1] == 0:
        raise ValueError("pool_tile_logits: empty bag (no tiles)")
    probs = torch.sigmoid(logits.float())
    if method == "mean":
        return probs.mean(dim=-1)
    if method == "topk":
        n = probs.shape[-1]
        k = params.get("k")
        if k is None:
            k = math.ceil(float(params.get("k_fraction", 0.1)) * n)
        k = max(1, min(int(k), n))
        return probs.topk(k, dim=-1).values.mean(dim=-1)
    if method == "noisy_and":
        a = float(params.get("a", 10.0))
        b = float(params.get("b", 0.5))
        mean = probs.mean(dim=-1)
        low = torch.sigmoid(torch.tensor(-a * b))
        high = torch.sigmoid(torch.tensor(a * (1.0 - b)))
        return ((torch.sigmoid(a * (mean - b)) - low) / (high - low)).clamp(0.0, 1.0)
    raise ConfigurationError(
        f"model.pooling.method={method!r} is unknown. Fix: one of {list(POOLING_METHODS)}."
    )


def check_pooling(pooling: dict[str, Any]) -> dict[str, Any]:
    """Validate a pooling dict ({"method": ..., params...}) early, at config time."""
    method = pooling.get("method", "mean")
    if method not in POOLING_METHODS:
        raise ConfigurationError(f"model.pooling.method={method!r} is unknown. Fix: one of {list(POOLING_METHODS)}.")
    pool_tile_logits(torch.zeros(4), **pooling)
    return dict(pooling)
