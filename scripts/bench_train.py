#!/usr/bin/env python
"""Training throughput: the real data pipeline vs the model alone, on the same batch shape.

    .venv/bin/python scripts/bench_train.py [--arch test_efficientnet] [--resolution 40x] [--steps 40] [--rounds 3]

1. pipeline: bags from tiles/*.h5 + slide pixels (TileReader, per-worker tile cache,
   augmentation) through the DataLoader exactly as `train` builds it, then forward, backward and
   an AdamW step of the member's LightningModule (which applies the colour/blur augmentation to the
   batch, so its cost counts against the pipeline).
2. model-only: the same module and step on random uint8 bags already in memory, not augmented.
Rounds alternate the two (the loader's queue is full in steady state either way, so the
alternation gives the pipeline nothing for free); prints the medians of tiles/s of both and of
their per-round ratio (the share of model throughput the pipeline keeps;
target >= 0.8 on 2 CPU cores with a tiny backbone). On a GPU it uses bf16 autocast and
channels_last as training does, and prints the card's name. The cohort is the `tiny` synthetic
preset tiled at 64 px (made once under --workdir).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "training"))


def load_text() -> str:
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load average n/a"


def make_cohort(workdir: Path) -> dict[str, Path]:
    from training_helpers import make_tiled_cohort  # the tests' tiny cohort recipe

    if (workdir / "tiles" / "summary.csv").is_file():
        return {"dir": workdir, "manifest": workdir / "manifest.csv", "clinical": workdir / "clinical.csv",
                "tiles": workdir / "tiles"}
    return make_tiled_cohort(workdir, n_training=16, n_tuning=4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "bench_out" / "train_cohort")
    parser.add_argument("--arch", default="test_efficientnet_gn")
    parser.add_argument("--resolution", default="40x")
    parser.add_argument("--bag-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    import torch

    from wsi_prognosis.cohort import read_manifest
    from wsi_prognosis.models.backbone import default_preprocessing
    from wsi_prognosis.models.data import BagDataModule, DataConfig, prepare_slides
    from wsi_prognosis.models.lit import MilModule

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cohort = make_cohort(args.workdir)
    manifest = read_manifest(cohort["manifest"])
    table = manifest[manifest["cohort"] == "training"].assign(y=np.float32(1), time=1.0, event=1, label="poor")
    table.loc[table.index[::2], "y"] = 0.0
    bags = prepare_slides(table, cohort["tiles"], args.resolution)
    config = DataConfig(bag_size=args.bag_size, batch_size=args.batch_size, num_workers=args.workers,
                        bags_per_slide=10_000)
    loader = BagDataModule(bags, bags[:1], config).train_dataloader()
    tile_px, mpp = bags[0].grid.tile_px, bags[0].grid.mpp
    torch.manual_seed(0)
    module = MilModule(arch=args.arch, preprocessing=default_preprocessing(args.arch, tile_px=tile_px, mpp=mpp).to_dict(),
                       pooling={"method": "mean"}, optim={}).to(device)
    module.train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

    def step(tiles: torch.Tensor, y: torch.Tensor, augment: torch.Tensor | None = None) -> None:
        tiles = tiles.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        augment = augment.to(device, non_blocking=True) if augment is not None else None
        with autocast:
            loss = module.training_step((tiles, y, None, augment), 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    module.log = lambda *a, **k: None  # no Trainer attached: logging is a no-op here
    tiles_per_step = args.bag_size * args.batch_size

    def timed(batches: Iterator[tuple[torch.Tensor, ...]], n: int) -> float:
        """tiles/s of n steps on `batches` (each (tiles, y, augmentation parameters or None))."""
        sync()
        started = time.perf_counter()
        for tiles, y, augment in itertools.islice(batches, n):
            step(tiles, y, augment)
        sync()
        return n * tiles_per_step / (time.perf_counter() - started)

    # 1. the real pipeline: (tiles, y, augmentation parameters) from the loader
    pipeline_batches = ((tiles, y, augment) for tiles, y, _, augment in loader)
    first = next(pipeline_batches)
    shape = tuple(first[0].shape)
    # 2. the model alone: random bags of the same shape already in memory (and on the device), no augmentation
    fake = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    fake_y = torch.randint(0, 2, (shape[0],), device=device).float()
    model_batches = itertools.repeat((fake, fake_y, None))

    # warm-up (untimed): starts the workers, fills their tile caches, warms the allocator
    timed(itertools.chain([first], pipeline_batches), args.warmup)
    timed(model_batches, args.warmup)
    # alternate rounds, so a change in the machine's load affects both sides of each ratio alike
    rounds = [(timed(pipeline_batches, args.steps), timed(model_batches, args.steps)) for _ in range(args.rounds)]
    pipeline = statistics.median(p for p, _ in rounds)
    model_only = statistics.median(m for _, m in rounds)
    ratios = [p / m for p, m in rounds]

    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    print(f"device: {card}; torch threads {torch.get_num_threads()}; cores {os.cpu_count()}; {load_text()}")
    print(f"batch: {shape[0]} bags x {shape[1]} tiles of {shape[2]} px at {args.resolution} ({mpp} µm/px), "
          f"arch {args.arch}, {args.workers} loader worker(s), {args.rounds} rounds of {args.steps} timed steps each "
          "(medians)")
    print(f"pipeline (tiles/*.h5 + slides -> augment -> train step): {pipeline:8.1f} tiles/s")
    print(f"model only (random tensors in memory):                 {model_only:8.1f} tiles/s")
    print(f"ratio pipeline / model-only: {statistics.median(ratios):.2f} (target >= 0.8); "
          f"per round {' '.join(f'{r:.2f}' for r in ratios)}")
    _ = pd  # pandas imported for the data module's tables
    return 0


if __name__ == "__main__":
    sys.exit(main())
