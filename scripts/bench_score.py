#!/usr/bin/env python
"""Scoring throughput: the whole engine (read + decode in workers + every member) vs the members alone.

    .venv/bin/python scripts/bench_score.py                      # CPU: 272 tiles of the slide, small members
    .venv/bin/python scripts/bench_score.py --device cuda        # GPU: the whole slide, ten MobileNetV2 members

1. Tiles the benchmark slide (scripts/bench_slide.py: 80,000 x 60,000 px at 0.25 µm/px, ~38 % tissue,
   about 36,000 40x and 2,300 10x tiles of 224 px) with the bundle's tile spec (cached under --workdir).
2. end-to-end: `scoring.engine.run_jobs` exactly as `score` runs it: a DataLoader whose worker
   processes read and decode the tiles through TileReader into pinned memory, every member of a
   resolution on each batch (bf16 autocast + channels_last on CUDA), logits gathered per slide.
3. model-only: the same runner on random uint8 batches already on the device, for the same
   number of tiles per resolution.
Prints tiles/s of both, their ratio (target >= 0.8) and the seconds for the slide (GPU target:
<= 10 s for the whole slide with ten members on one H100). A tile counts once however many
members score it. The bundle is random-initialised (`--bundle DIR` to use a real one).
The machine may be shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

RESOLUTIONS = {"10x": {"mpp": 1.0, "tile_px": 224}, "40x": {"mpp": 0.25, "tile_px": 224}}


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def make_bundle(out: Path, arch: str, per_res: int, tile_px: int) -> Path:
    """A bundle of random-initialised members, written through ensemble.write_bundle."""
    import torch

    from wsi_prognosis.ensemble import Member, load_bundle, write_bundle
    from wsi_prognosis.models import build_backbone, default_preprocessing
    from wsi_prognosis.tiling.config import TilingConfig

    resolutions = {name: {**spec, "tile_px": tile_px} for name, spec in RESOLUTIONS.items()}
    if (out / "bundle.json").is_file():
        bundle = load_bundle(out)
        if len(bundle.members) == 2 * per_res and bundle.members[0].arch == arch and bundle.tile_spec["resolutions"] == resolutions:
            return out
    tile_spec = TilingConfig.from_mapping(tiling={"resolutions": resolutions}).tile_spec()
    pairs = []
    weights = out.parent / f"{out.name}-weights"
    weights.mkdir(parents=True, exist_ok=True)
    for res, spec in resolutions.items():
        for k in range(per_res):
            torch.manual_seed(k + (100 if res == "40x" else 0))
            path = weights / f"{res}_{k}.pt"
            torch.save(build_backbone(arch).state_dict(), path)
            prep = default_preprocessing(arch, tile_px=spec["tile_px"], mpp=spec["mpp"]).to_dict()
            pairs.append((Member(f"{res}_{k}", res, arch, "", "", prep, {"method": "mean"}), path))
    write_bundle(out, pairs, tile_spec=tile_spec, aggregation={"members": "mean"}, training_configs={})
    return out


def tile_slide(slide: Path, bundle, workdir: Path) -> Path:
    import pandas as pd

    from wsi_prognosis.tiling.config import TilingConfig
    from wsi_prognosis.tiling.pipeline import tile_manifest

    tiles = workdir / "tiles"
    manifest = pd.DataFrame([{"slide_id": "bench", "patient_id": "bench", "path": str(slide), "cohort": "bench",
                              "mpp": float("nan"), "annotation": None}])
    summary = tile_manifest(manifest, tiles, TilingConfig.from_tile_spec(bundle.tile_spec), workers=1)
    if summary["status"].iloc[0] != "ok":
        raise SystemExit(f"tiling failed: {summary['error'].iloc[0]}")
    return tiles / "bench.h5"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--slide", type=Path, default=None, help="default: the benchmark slide (built once)")
    parser.add_argument("--bundle", type=Path, default=None, help="a real bundle; default: random members")
    parser.add_argument("--arch", default=None, help="default: mobilenetv2_100 on CUDA, test_efficientnet on CPU")
    parser.add_argument("--members-per-res", type=int, default=5)
    parser.add_argument("--tile-px", type=int, default=224)
    parser.add_argument("--batch-tiles", type=int, default=None, help="default: 512 on CUDA, 64 on CPU")
    parser.add_argument("--workers", type=int, default=None, help="reader processes; default: min(8, cores-1) or 1 on 2 cores")
    parser.add_argument("--prefetch", type=int, default=4)
    parser.add_argument("--max-tiles-40x", type=int, default=None, help="default: all on CUDA, 256 on CPU")
    parser.add_argument("--max-tiles-10x", type=int, default=None, help="default: all on CUDA, 16 on CPU")
    parser.add_argument("--repeats", type=int, default=2,
                        help="alternate model-only and end-to-end passes this often; the best of each counts")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/wsi-bench/score"))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import numpy as np
    import torch

    from wsi_prognosis.ensemble import load_bundle
    from wsi_prognosis.scoring.batch import load_members
    from wsi_prognosis.scoring.engine import EngineConfig, EngineStats, EnsembleRunner, TileJob, run_jobs
    from wsi_prognosis.slides import TileReader
    from wsi_prognosis.tiling import open_tile_store

    cuda = args.device.startswith("cuda")
    arch = args.arch or ("mobilenetv2_100" if cuda else "test_efficientnet")
    cores = os.cpu_count() or 1
    workers = args.workers if args.workers is not None else (min(8, cores - 1) if cores > 2 else 1)
    batch = args.batch_tiles or (512 if cuda else 64)
    limit40 = args.max_tiles_40x if args.max_tiles_40x is not None else (None if cuda else 256)
    limit10 = args.max_tiles_10x if args.max_tiles_10x is not None else (None if cuda else 16)
    args.workdir.mkdir(parents=True, exist_ok=True)

    slide = args.slide
    if slide is None:
        import bench_slide

        slide = bench_slide.DEFAULT_PATH
        if not slide.is_file():
            print(f"building the benchmark slide at {slide} (once, about a minute) ...", flush=True)
            bench_slide.build(slide)
    bundle_dir = args.bundle or make_bundle(args.workdir / f"bundle-{arch}-{args.members_per_res}x2-{args.tile_px}px",
                                            arch, args.members_per_res, args.tile_px)
    bundle = load_bundle(bundle_dir)
    store_path = tile_slide(slide, bundle, args.workdir)
    with open_tile_store(store_path) as store:
        coords = {res: store.coords(res) for res in store.resolutions}
        grids = {res: store.grid(res) for res in store.resolutions}
        slide_mpp = store.mpp
    n_slide = {res: len(c) for res, c in coords.items()}
    limits = {"40x": limit40, "10x": limit10}
    coords = {res: c[: limits.get(res)] if limits.get(res) is not None else c for res, c in coords.items()}

    config = EngineConfig(device=args.device, batch_tiles=batch, workers=workers, prefetch_batches=args.prefetch)
    runner = EnsembleRunner(load_members(bundle), config)
    resolutions = [r for r in runner.by_resolution if r in coords]
    jobs = [TileJob("bench", res, TileReader(slide, grids[res], slide_mpp), coords[res]) for res in resolutions]
    n_tiles = sum(len(coords[r]) for r in resolutions)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(runner.device)

    # warm-up: kernels, cuDNN algorithm choice, page cache of the slide's first tiles
    warm = [TileJob("warm", res, TileReader(slide, grids[res], slide_mpp), coords[res][: batch]) for res in resolutions]
    for _ in run_jobs(warm, runner, EngineConfig(device=args.device, batch_tiles=batch, workers=0)):
        pass
    for res in resolutions:
        runner.logits_on_device(res, torch.zeros((batch, args.tile_px, args.tile_px, 3), dtype=torch.uint8, device=runner.device))
    sync()

    rng = np.random.default_rng(0)
    on_device = torch.from_numpy(rng.integers(0, 256, (batch, args.tile_px, args.tile_px, 3), dtype=np.uint8)).to(runner.device)

    def model_only() -> float:
        """Random uint8 batches already on the device, the same tiles per resolution."""
        sync()
        started = time.perf_counter()
        outputs = []
        for res in resolutions:
            remaining = len(coords[res])
            while remaining > 0:
                n = min(batch, remaining)
                outputs.append(runner.logits_on_device(res, on_device[:n]))
                remaining -= n
        sync()
        return time.perf_counter() - started

    def end_to_end() -> float:
        """The engine as `score` runs it: reader workers, pinned memory, every member."""
        started = time.perf_counter()
        results = list(run_jobs(jobs, runner, config, stats=EngineStats()))
        seconds = time.perf_counter() - started
        assert not results[0].error, results[0].error
        assert sum(v.shape[1] for v in results[0].logits.values()) == n_tiles
        return seconds

    def read_only() -> float:
        """The reader pipeline alone (workers, pinned memory), no model: the headroom of the input side."""
        from torch.utils.data import DataLoader

        from wsi_prognosis.scoring.engine import _ChunkDataset

        loader = DataLoader(_ChunkDataset(jobs, batch), batch_size=None, num_workers=workers, pin_memory=cuda,
                            prefetch_factor=args.prefetch if workers > 0 else None)
        started = time.perf_counter()
        for _, tiles, error in loader:
            assert not error, error
            if cuda:
                tiles.to(runner.device, non_blocking=True)
        sync()
        return time.perf_counter() - started

    read_s = read_only()
    # alternate the two so that a busy (shared) machine slows both alike; keep the best of each
    model_runs, e2e_runs = [], []
    for _ in range(max(1, args.repeats)):
        model_runs.append(model_only())
        e2e_runs.append(end_to_end())
    model_s, e2e_s = min(model_runs), min(e2e_runs)

    model_rate, e2e_rate = n_tiles / model_s, n_tiles / e2e_s
    device_name = torch.cuda.get_device_name(runner.device) if cuda else platform.processor() or platform.machine()
    figures = {
        "device": str(runner.device), "device_name": device_name, "cores": cores, "load_average": load_average(),
        "torch": torch.__version__, "arch": arch, "members": {r: len(runner.by_resolution[r]) for r in resolutions},
        "tile_px": args.tile_px, "batch_tiles": batch, "workers": workers, "bf16": runner.bf16,
        "channels_last": runner.channels_last, "slide": str(slide), "slide_tiles": n_slide,
        "tiles": {r: len(coords[r]) for r in resolutions}, "model_only_s": round(model_s, 3),
        "end_to_end_s": round(e2e_s, 3), "model_only_runs_s": [round(v, 3) for v in model_runs],
        "end_to_end_runs_s": [round(v, 3) for v in e2e_runs], "model_only_tiles_per_s": round(model_rate, 1),
        "end_to_end_tiles_per_s": round(e2e_rate, 1), "ratio": round(e2e_rate / model_rate, 3),
        "read_only_tiles_per_s": round(n_tiles / read_s, 1),
        "whole_slide_s_estimate": round(sum(n_slide.values()) / e2e_rate, 1),
    }
    print(f"device           {figures['device']} ({device_name}), {cores} cores, load average {figures['load_average']}")
    print(f"bundle           {bundle.id}: {figures['members']} x {arch} at {args.tile_px} px, batch {batch}, "
          f"{workers} reader worker(s), bf16={runner.bf16}, channels_last={runner.channels_last}")
    print(f"tiles            {figures['tiles']} of the slide's {n_slide}")
    print(f"model only       {model_rate:10.1f} tiles/s (best of {figures['model_only_runs_s']} s)")
    print(f"end to end       {e2e_rate:10.1f} tiles/s (best of {figures['end_to_end_runs_s']} s)")
    print(f"ratio            {figures['ratio']:.3f}  (target >= 0.8)")
    print(f"reader alone     {figures['read_only_tiles_per_s']:10.1f} tiles/s (read + decode + pin, no model)")
    print(f"whole slide      {figures['whole_slide_s_estimate']:.1f} s at the end-to-end rate ({sum(n_slide.values())} tiles)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
