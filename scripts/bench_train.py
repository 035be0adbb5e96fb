#!/usr/bin/env python
"""Training throughput: the real data pipeline vs the model alone, on the same batch shape.

    .venv/bin/python scripts/bench_train.py [--arch test_efficientnet] [--resolution 40x] [--steps 40]

1. pipeline: bags from tiles/*.h5 + slide pixels (TileReader, per-worker tile cache,
   augmentation) through the DataLoader exactly as `train` builds it, then forward, backward and
   an AdamW step of the member's LightningModule.
2. model-only: the same module and step on random uint8 bags already in memory.
Prints tiles/s of both and their ratio (the share of model throughput the pipeline keeps;
target >= 0.8 on 2 CPU cores with a tiny backbone). On a GPU it uses bf16 autocast and
channels_last as training does, and prints the card's name. The cohort is the `tiny` synthetic
preset tiled at 64 px (made once under --workdir).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
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
    parser.add_argument("--steps", type=int, default=40)
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

    def step(tiles: torch.Tensor, y: torch.Tensor) -> None:
        tiles = tiles.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        with autocast:
            loss = module.training_step((tiles, y, None), 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    module.log = lambda *a, **k: None  # no Trainer attached: logging is a no-op here
    tiles_per_step = args.bag_size * args.batch_size

    # 1. the real pipeline; warm-up steps fill each worker's tile cache and start the workers
    batches = iter(loader)
    for tiles, y, _ in itertools.islice(batches, args.warmup):
        step(tiles, y)
    sync()
    started = time.perf_counter()
    for tiles, y, _ in itertools.islice(batches, args.steps):
        step(tiles, y)
    sync()
    pipeline = args.steps * tiles_per_step / (time.perf_counter() - started)
    shape = tuple(tiles.shape)
    del batches

    # 2. the model alone, random bags of the same shape already in memory (and on the device)
    fake = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    fake_y = torch.randint(0, 2, (shape[0],), device=device).float()
    for _ in range(args.warmup):
        step(fake, fake_y)
    sync()
    started = time.perf_counter()
    for _ in range(args.steps):
        step(fake, fake_y)
    sync()
    model_only = args.steps * tiles_per_step / (time.perf_counter() - started)

    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    print(f"device: {card}; torch threads {torch.get_num_threads()}; cores {os.cpu_count()}; {load_text()}")
    print(f"batch: {shape[0]} bags x {shape[1]} tiles of {shape[2]} px at {args.resolution} ({mpp} µm/px), "
          f"arch {args.arch}, {args.workers} loader worker(s), {args.steps} timed steps")
    print(f"pipeline (tiles/*.h5 + slides -> augment -> train step): {pipeline:8.1f} tiles/s")
    print(f"model only (random tensors in memory):                 {model_only:8.1f} tiles/s")
    print(f"ratio pipeline / model-only: {pipeline / model_only:.2f} (target >= 0.8)")
    _ = pd  # pandas imported for the data module's tables
    return 0


if __name__ == "__main__":
    sys.exit(main())
