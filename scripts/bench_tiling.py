"""Benchmark of `wsi-prognosis tile` on the issue-2 slide (80,000 x 60,000 px, 40x, ~38 % tissue).

Runs the real command as a whole process (imports, Hydra, mask, both grids, HDF5, QC PNG)
`--repeats` times into fresh folders and prints wall seconds (median), CPU seconds, peak RSS
of the process and the tiles found. Targets (issue 2): <= 1.6 s wall, <= 400 MB.

Usage:
  .venv/bin/python scripts/bench_tiling.py                 # builds the slide once (cached in /tmp)
  .venv/bin/python scripts/bench_tiling.py --slide S.tiff  # any slide
  .venv/bin/python scripts/bench_tiling.py --source synth  # the slide from wsi_prognosis.synth
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_slide  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORK = Path("/tmp/wsi-bench")


def synth_slide() -> Path:
    from wsi_prognosis.synth import SynthConfig, make_cohort

    out = WORK / "synth-benchmark"
    slides = sorted((out / "slides").glob("*")) if out.is_dir() else []
    if not slides:
        make_cohort(out, SynthConfig.from_preset("benchmark"))
        slides = sorted((out / "slides").glob("*"))
    return slides[0]


FLOOR = """
import sys, numpy as np, openslide
slide = openslide.OpenSlide(sys.argv[1])
level = slide.get_best_level_for_downsample(32)
rgb = np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]))[..., :3]
high, low = rgb.max(axis=2).astype(np.int32), rgb.min(axis=2).astype(np.int32)
sat = ((high - low) * 255 // np.maximum(high, 1)).astype(np.uint8)
hist = np.bincount(sat.ravel(), minlength=256).astype(np.float64)
levels = np.arange(256)
w0 = np.cumsum(hist); w1 = w0[-1] - w0
m0 = np.cumsum(hist * levels) / np.maximum(w0, 1); m1 = ((hist * levels).sum() - np.cumsum(hist * levels)) / np.maximum(w1, 1)
threshold = np.argmax(w0 * w1 * (m0 - m1) ** 2)
mask = sat > threshold
step = int(256 / slide.level_downsamples[level])
h, w = mask.shape[0] // step * step, mask.shape[1] // step * step
fraction = mask[:h, :w].reshape(h // step, step, w // step, step).mean(axis=(1, 3))
rows, cols = np.nonzero(fraction >= 0.5)
np.save(sys.argv[2], np.stack([cols * 256, rows * 256], axis=1).astype(np.int64))
"""


def run_once(command: list[str]) -> tuple[float, float, float, int]:
    """(wall s, CPU s, peak RSS MB, exit status) of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode() if process.stderr else ""
    if process.returncode != 0:
        sys.exit(f"tile failed ({process.returncode}):\n{stderr}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, process.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slide", type=Path, help="slide to tile (default: build the benchmark slide)")
    parser.add_argument("--source", choices=["textures", "synth"], default="textures",
                        help="how to build the slide when --slide is not given")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=WORK / "tiles", help="the last run's tile store stays here")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the reference 'floor' process (thumbnail + numpy saturation + Otsu + 256-px grid)")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for `wsi-prognosis tile`")
    args = parser.parse_args()

    slide = args.slide or (bench_slide.build() if args.source == "textures" else synth_slide())
    WORK.mkdir(parents=True, exist_ok=True)            # with --slide nothing has created it yet
    manifest = WORK / "bench-manifest.csv"
    manifest.write_text(f"slide_id,patient_id,path,cohort\nbenchmark,p0,{slide.resolve()},benchmark\n")
    executable = Path(sys.executable).parent / "wsi-prognosis"
    command = [str(executable) if executable.exists() else sys.executable, *([] if executable.exists() else
               ["-m", "wsi_prognosis.cli"]), "tile", f"manifest={manifest}"]
    results, floors = [], []
    for _ in range(args.repeats):                      # alternate, so both see the same machine load
        shutil.rmtree(args.out, ignore_errors=True)   # a fresh folder: nothing to skip
        results.append(run_once([*command, f"out={args.out}", *args.overrides]))
        if not args.no_floor:
            floors.append(run_once([sys.executable, "-c", FLOOR, str(slide), str(WORK / "floor-coords.npy")]))
    with open(args.out / "summary.csv") as handle:
        row = next(csv.DictReader(handle))
    walls = [r[0] for r in results]
    print(f"slide: {slide} ({row['status']}, mpp {row['mpp']} from {row['mpp_source']}, "
          f"tissue {float(row['tissue_mm2']):.1f} mm²)")
    print(f"command: {' '.join(command)} out={args.out} {' '.join(args.overrides)}")
    print(f"wall s (median of {len(walls)}): {statistics.median(walls):.2f}   all: {', '.join(f'{w:.2f}' for w in walls)}")
    print(f"CPU s (median): {statistics.median(r[1] for r in results):.2f}")
    print(f"peak RSS MB (max): {max(r[2] for r in results):.0f}")
    print(f"tiles: 10x {row['n_tiles_10x']}, 40x {row['n_tiles_40x']}")
    if floors:
        floor_wall = statistics.median(r[0] for r in floors)
        print(f"floor (thumbnail + numpy saturation + Otsu + 256-px grid, same load): wall {floor_wall:.2f} s, "
              f"CPU {statistics.median(r[1] for r in floors):.2f} s, peak RSS {max(r[2] for r in floors):.0f} MB; "
              f"tile / floor wall = {statistics.median(walls) / floor_wall:.2f} "
              f"(issue 2: floor 1.18 s on an idle machine, target 1.6 s = 1.36 x floor)")
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
