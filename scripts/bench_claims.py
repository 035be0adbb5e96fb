#!/usr/bin/env python
"""N workers on one output folder against one worker, on the same batch, in one run (issue 18).

    .venv/bin/python scripts/bench_claims.py                          # score and embed, 2 workers, CPU
    .venv/bin/python scripts/bench_claims.py --stages score --slides 48 --workers 4 --device cuda

1. Makes a synthetic cohort (`synth`, the tiny preset's slides, `--slides` of them), tiles it with the
   bundle's tile spec, and writes a bundle of random-initialised members (`--arch`, as bench_score.py
   does): all once, under --workdir.
2. For each stage (`score`: the bundle's members on the tile stores; `embed`: the random-cnn encoder on
   them): one worker alone (`wsi-prognosis <stage> ...`), then `--workers` workers started at once on
   another folder with the same command, each a real CLI process. The wall time of each is printed,
   and that of one worker with a worker's share of the cores (cores / N threads), which tells the gain
   of N workers from that of fewer threads per process (on a loaded machine fewer threads can be faster).
   Embed makes `--embed-views` augmented views of every tile, so that a slide costs more than the
   difference between two workers' start-ups (a worker that starts after the batch is done finds
   nothing to do: it is a rerun, and rebuilds embed_summary.csv with every slide `skipped`).
3. Checks, from the workers' logs (one line per slide: "<slide_id>: scored (" / "<slide_id>: embedded ("),
   that the work done summed over the workers equals the batch size, each slide once, and that the
   tables (scores.csv, embed_summary.csv) equal the single worker's. Exit status 1 when a check fails.

The speed-up needs spare hardware: on a machine whose cores one worker already fills (2 cores, or a
machine shared with other jobs: the load average is printed with the figures) N workers only share
them. A worker's start-up (imports, loading the members) is paid once per worker and is part of the
figures, as it is for a user who starts N jobs.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESOLUTIONS = {"10x": {"mpp": 2.0, "tile_px": 32}, "40x": {"mpp": 1.0, "tile_px": 32}}  # tiny slides: small tiles
TISSUE = {"mask_mpp": 2.0, "min_tissue_area_um2": 2000, "max_hole_area_um2": 2000, "closing_um": 8}
LINES = {"score": re.compile(r"\] - (\S+): scored \("), "embed": re.compile(r"\] - (\S+): embedded \(")}


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def make_cohort(root: Path, slides: int, width_px: int) -> Path:
    """A synthetic cohort of `slides` slides of the tiny preset, `width_px` wide, made once."""
    from wsi_prognosis.synth import SynthConfig
    from wsi_prognosis.synth import make_cohort as synth

    manifest = root / "manifest.csv"
    if not manifest.is_file():
        per = max(1, slides // 3)
        synth(root, SynthConfig.from_preset("tiny", seed=0, n_training=per, n_tuning=per, n_validation=slides - 2 * per,
                                            with_test=False, width_px=width_px, height_px=width_px * 13 // 16,
                                            workers=2))
    return manifest


def make_bundle(out: Path, arch: str, per_res: int) -> Path:
    """Random-initialised members through the real bundle writer (as bench_score.py), made once."""
    import torch

    from wsi_prognosis.ensemble import Member, write_bundle
    from wsi_prognosis.models import build_backbone, default_preprocessing
    from wsi_prognosis.tiling.config import TilingConfig

    if (out / "bundle.json").is_file():
        return out
    tile_spec = TilingConfig.from_mapping(tiling={"resolutions": RESOLUTIONS, "min_tissue_fraction": 0.5},
                                          tissue=TISSUE).tile_spec()
    pairs = []
    weights = out.parent / f"{out.name}-weights"
    weights.mkdir(parents=True, exist_ok=True)
    for res, spec in RESOLUTIONS.items():
        for k in range(per_res):
            torch.manual_seed(k + (100 if res == "40x" else 0))
            path = weights / f"{res}_{k}.pt"
            torch.save(build_backbone(arch).state_dict(), path)
            prep = default_preprocessing(arch, tile_px=spec["tile_px"], mpp=spec["mpp"]).to_dict()
            pairs.append((Member(f"{res}_{k}", res, arch, "", "", prep, {"method": "mean"}), path))
    write_bundle(out, pairs, tile_spec=tile_spec, aggregation={"members": "mean"}, training_configs={})
    return out


def tile_cohort(manifest: Path, bundle: Path, tiles: Path) -> None:
    from wsi_prognosis.cohort import read_manifest
    from wsi_prognosis.ensemble import load_bundle
    from wsi_prognosis.tiling.pipeline import TilingConfig, tile_manifest

    if (tiles / "summary.csv").is_file():
        return
    config = TilingConfig.from_tile_spec(load_bundle(bundle).tile_spec)
    summary = tile_manifest(read_manifest(manifest), tiles, config, workers=2)
    if (summary["status"] != "ok").any():
        raise SystemExit(f"tiling failed: {summary[summary['status'] != 'ok'].to_dict('records')}")


def run_workers(command: list[str], n: int, logs: list[Path], env: dict[str, str]) -> float:
    """Start `n` copies of `command` at once; the wall time until the last exits (0 each, or the run stops)."""
    started = time.perf_counter()
    procs = []
    for log in logs[:n]:
        with open(log, "w") as handle:
            procs.append(subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env))
    for proc, log in zip(procs, logs):
        if proc.wait() != 0:
            raise SystemExit(f"a worker failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - started


def stage_command(stage: str, args: argparse.Namespace, paths: dict[str, Path], out: Path, threads: int) -> list[str]:
    cli = [sys.executable, "-m", "wsi_prognosis.cli", stage]
    if stage == "score":
        return [*cli, f"bundle={paths['bundle']}", f"manifest={paths['manifest']}", f"tiles={paths['tiles']}",
                f"out={out}", f"engine.device={args.device}", "engine.workers=0", "exports.heatmap=false",
                "exports.geojson=false", f"claims.batch_slides={args.batch_slides}"]
    return [*cli, f"tiles={paths['tiles']}", f"manifest={paths['manifest']}", f"out={out}", "encoder=random-cnn",
            f"device={args.device}", f"views={args.embed_views}", "view_cohorts=[training,tuning,validation]",
            f"threads={threads}"]


def table(stage: str, out: Path) -> Path:
    return out / "scores.csv" if stage == "score" else out / "random-cnn" / "embed_summary.csv"


def bench_stage(stage: str, args: argparse.Namespace, paths: dict[str, Path], n_slides: int) -> bool:
    import shutil

    root = args.workdir / f"run-{stage}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    shared = max(1, cores // args.workers) if args.split_cores else cores
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    one_logs = [root / "one-0.log"]
    many_logs = [root / f"many-{i}.log" for i in range(args.workers)]
    print(f"{stage}: 1 worker, {cores} threads ... (load average {load_average()})", flush=True)
    one = run_workers(stage_command(stage, args, paths, root / "one", cores), 1, one_logs,
                      {**env, "OMP_NUM_THREADS": str(cores)})
    print(f"{stage}: {args.workers} workers on one folder, {shared} threads each ... (load average {load_average()})",
          flush=True)
    many = run_workers(stage_command(stage, args, paths, root / "many", shared), args.workers, many_logs,
                       {**env, "OMP_NUM_THREADS": str(shared)})
    narrow = None
    if shared != cores:  # one worker with a worker's share of the cores: how much of the gain is only the threads
        narrow = run_workers(stage_command(stage, args, paths, root / "narrow", shared), 1, [root / "narrow-0.log"],
                             {**env, "OMP_NUM_THREADS": str(shared)})
    per_worker = [LINES[stage].findall(log.read_text()) for log in many_logs]
    counts = Counter(s for slides in per_worker for s in slides)
    alone = LINES[stage].findall(one_logs[0].read_text())
    done = sum(len(s) for s in per_worker)
    checks = {
        f"work done summed over workers = batch ({done} = {n_slides})": done == n_slides,
        "each slide once": set(counts.values()) <= {1} and len(counts) == n_slides,
        f"the single worker did the batch ({len(alone)})": len(alone) == n_slides,
        f"{table(stage, root / 'many').name} equal to one worker's":
            table(stage, root / "many").read_bytes() == table(stage, root / "one").read_bytes(),
    }
    print(f"{stage}: 1 worker {one:.1f} s; {args.workers} workers {many:.1f} s wall (x{one / many:.2f}); "
          f"slides per worker {[len(s) for s in per_worker]}; load average {load_average()}")
    if narrow is not None:
        print(f"{stage}: 1 worker with {shared} thread(s) {narrow:.1f} s (the {args.workers} workers: x{narrow / many:.2f})")
    for what, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    return all(checks.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default="score,embed", help="score, embed or both (comma-separated)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slides", type=int, default=24)
    parser.add_argument("--slide-px", type=int, default=2048, help="slide width, px at 0.25 µm/px (tiny preset: 1024)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (every worker on it)")
    parser.add_argument("--arch", default="test_efficientnet", help="score: the members' timm architecture")
    parser.add_argument("--members-per-res", type=int, default=2)
    parser.add_argument("--batch-slides", type=int, default=4, help="score: claims.batch_slides")
    parser.add_argument("--embed-views", type=int, default=4, help="embed: augmented views of every tile (more work "
                        "per slide than a worker's start-up, so that both workers take part)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/wsi-bench/claims"))
    parser.add_argument("--no-split-cores", dest="split_cores", action="store_false",
                        help="every worker uses every core (default: N workers share them, cores / N threads each, "
                             "as N jobs on one machine should; one worker alone gets them all)")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    cohort = args.workdir / f"cohort-{args.slides}-{args.slide_px}px"
    paths = {"manifest": make_cohort(cohort, args.slides, args.slide_px),
             "bundle": make_bundle(args.workdir / f"bundle-{args.arch}-{args.members_per_res}", args.arch,
                                   args.members_per_res)}
    paths["tiles"] = cohort / "tiles"
    tile_cohort(paths["manifest"], paths["bundle"], paths["tiles"])
    import pandas as pd

    n_slides = len(pd.read_csv(paths["manifest"]))
    print(f"{n_slides} slides, {os.cpu_count()} cores, device {args.device}, load average {load_average()}", flush=True)
    ok = True
    for stage in [s.strip() for s in args.stages.split(",") if s.strip()]:
        if stage not in LINES:
            raise SystemExit(f"--stages: {stage!r} is not one of {sorted(LINES)}")
        ok = bench_stage(stage, args, paths, n_slides) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
