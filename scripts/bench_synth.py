#!/usr/bin/env python
"""Benchmark the synthetic cohort generator: the demo cohort and one benchmark-size slide.

    .venv/bin/python scripts/bench_synth.py [--out DIR] [--keep] [--skip-demo] [--skip-benchmark]
                                             [--width-px 80000 --height-px 60000] [--workers 2]

Targets (issue 3): demo cohort <= 60 s on 2 cores; one ~80,000 x 60,000 px slide <= 120 s.
Prints wall time, pixel throughput, file sizes and peak RSS (this process and the largest
worker), plus the machine's load (`uptime`), since a shared machine slows everything down.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from wsi_prognosis.synth import SynthConfig, make_cohort


def _load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _peak_rss_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (load-independent)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def bench_demo(out: Path, workers: int) -> None:
    config = SynthConfig.from_preset("demo", seed=0, workers=workers)
    started, cpu = time.perf_counter(), _cpu_seconds()
    result = make_cohort(out, config)
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    print(f"demo cohort: {result['n_slides']} slides {result['slides_per_cohort']} in {seconds:.1f} s wall, "
          f"{cpu:.1f} CPU-s ({seconds / result['n_slides'] * 1000:.0f} ms/slide wall, {workers} workers), "
          f"{_folder_mb(out / 'slides'):.1f} MB of slides  [target <= 60 s]")


def bench_big(out: Path, width_px: int, height_px: int, workers: int) -> None:
    config = SynthConfig.from_preset("benchmark", seed=0, width_px=width_px, height_px=height_px, workers=workers)
    started, cpu = time.perf_counter(), _cpu_seconds()
    result = make_cohort(out, config)
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    slide = next((out / "slides").rglob("*.tiff"))
    import openslide

    with openslide.OpenSlide(str(slide)) as handle:
        dims, mpp = handle.dimensions, handle.properties.get("openslide.mpp-x")
        levels = len(handle.level_dimensions)
    gigapixels = dims[0] * dims[1] / 1e9
    print(f"benchmark slide: {dims[0]} x {dims[1]} px ({gigapixels:.2f} Gpx, mpp {mpp}, {levels} levels) "
          f"in {seconds:.1f} s wall, {cpu:.1f} CPU-s, incl. cohort tables and gallery ({gigapixels * 1e3 / seconds:.0f} Mpx/s), "
          f"{slide.stat().st_size / 1e6:.0f} MB, {workers} workers  [target <= 120 s]")
    del result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-benchmark", action="store_true")
    parser.add_argument("--width-px", type=int, default=80_000)
    parser.add_argument("--height-px", type=int, default=60_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_synth_"))
    print(f"machine: {os.cpu_count()} CPUs; before: {_load()}")
    try:
        if not args.skip_demo:
            bench_demo(root / "demo", args.workers)
            print(f"  load now: {_load()}")
        if not args.skip_benchmark:
            bench_big(root / "benchmark", args.width_px, args.height_px, args.workers)
            print(f"  load now: {_load()}")
        own, children = _peak_rss_mb()
        print(f"peak RSS: main process {own:.0f} MB, largest worker {children:.0f} MB")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept: {root}")


if __name__ == "__main__":
    main()
