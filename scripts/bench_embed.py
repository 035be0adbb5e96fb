#!/usr/bin/env python
"""Embedding throughput, side by side in one run: model only (torch eager fp32, torch channels_last,
ONNX Runtime) and `embed` end to end (read + decode + preprocess + encoder + write), on this machine.

Model-only runs one batch of `--batch` real H&E tiles (tests/data, cropped to the tile size) again and
again; end to end runs the real `embed` batch (`features.embed.embed_slides`) over a synthetic cohort
tiled at 224 px (made once under --out). The target: end to end >= 0.8 x ONNX Runtime's model-only rate.

    .venv/bin/python scripts/bench_embed.py                    # lite0, 2 threads (a 2-core machine)
    .venv/bin/python scripts/bench_embed.py --encoder lite2 --device cuda   # on a GPU: torch bf16 too
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def real_tiles(n: int, px: int) -> np.ndarray:
    from PIL import Image

    sources = sorted((REPO / "tests" / "data" / "tiles").glob("*.jpg"))
    crops = [np.asarray(Image.open(p).convert("RGB")) for p in sources]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        image = crops[i % len(crops)]
        y, x = rng.integers(0, image.shape[0] - px + 1), rng.integers(0, image.shape[1] - px + 1)
        out.append(image[y:y + px, x:x + px])
    return np.stack(out)


def rate(fn, n_tiles: int, seconds: float) -> float:
    fn()  # warm-up
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or runs < 2:
        fn()
        runs += 1
    return runs * n_tiles / (time.perf_counter() - started)


def model_only(encoder_name: str, px: int, batch: int, seconds: float, device: str) -> dict[str, float]:
    import torch

    from wsi_prognosis.encoders import EmbedderConfig, TileEmbedder, load_encoder
    from wsi_prognosis.encoders.runtime import onnx_available

    encoder = load_encoder(encoder_name)
    tiles = real_tiles(batch, px)
    results = {}
    eager = TileEmbedder(encoder, px, EmbedderConfig(runtime="torch", device="cpu", channels_last=False,
                                                     batch_tiles=batch))
    eager.module.encoder.to(memory_format=torch.contiguous_format)
    results["torch eager fp32 (CPU)"] = rate(lambda: eager.embed(tiles), batch, seconds)
    last = TileEmbedder(encoder, px, EmbedderConfig(runtime="torch", device="cpu", batch_tiles=batch))
    x = torch.from_numpy(tiles)

    def channels_last() -> None:
        with torch.inference_mode():
            last.module.channels_last = True
            last.module(x)

    results["torch channels_last fp32 (CPU)"] = rate(channels_last, batch, seconds)
    if onnx_available():
        onnx = TileEmbedder(encoder, px, EmbedderConfig(runtime="onnx", batch_tiles=batch))
        results["ONNX Runtime (CPU provider)"] = rate(lambda: onnx.embed(tiles), batch, seconds)
        np.testing.assert_allclose(onnx.embed(tiles[:8]), eager.embed(tiles[:8]), atol=1e-4, rtol=1e-4)
    if device.startswith("cuda") and torch.cuda.is_available():
        gpu = TileEmbedder(encoder, px, EmbedderConfig(runtime="torch", device=device, batch_tiles=batch))
        gx = torch.from_numpy(tiles).to(device)

        def on_gpu() -> None:
            gpu.embed_tensor(gx)
            torch.cuda.synchronize()

        results[f"torch bf16 channels_last ({device})"] = rate(on_gpu, batch, seconds)
    return results


def end_to_end(encoder_name: str, out: Path, device: str) -> tuple[float, int]:
    from wsi_prognosis.cohort.manifest import read_manifest_rows
    from wsi_prognosis.encoders.runtime import EmbedderConfig
    from wsi_prognosis.features.embed import EmbedOptions, embed_slides

    cohort, tiles = out / "cohort", out / "tiles"
    cli = [sys.executable, "-m", "wsi_prognosis.cli"]
    if not (cohort / "manifest.csv").is_file():
        subprocess.run([*cli, "synth", f"out={cohort}", "preset=demo", "n_training=12", "n_tuning=12",
                        "n_validation=12"], check=True, capture_output=True)
    if not (tiles / "run_tile.json").is_file():
        subprocess.run([*cli, "tile", f"manifest={cohort / 'manifest.csv'}", f"out={tiles}", "tissue.mask_mpp=4",
                        "tissue.min_tissue_area_um2=5000"], check=True, capture_output=True)
    features = out / f"features-{time.time_ns()}"
    options = EmbedOptions(encoder=encoder_name, embedder=EmbedderConfig(device=device))
    result = embed_slides(read_manifest_rows(cohort / "manifest.csv"), tiles, features, options)
    import shutil

    shutil.rmtree(features, ignore_errors=True)
    return result.tiles_per_s, result.tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="lite0")
    parser.add_argument("--px", type=int, default=224, help="tile size (the encoder resizes to its input px)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="per model-only measurement")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (adds torch bf16 on the GPU; end to end on it)")
    parser.add_argument("--out", default=str(REPO / "bench_out" / "embed"))
    args = parser.parse_args()
    os.environ.setdefault("WSI_PROGNOSIS_CACHE", str(Path(args.out) / "cache"))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    print(f"{args.encoder}, {args.px}-px tiles, batch {args.batch}, {os.cpu_count()} cores visible, "
          f"load average {os.getloadavg()[0]:.1f} before")
    results = model_only(args.encoder, args.px, args.batch, args.seconds, args.device)
    for name, value in results.items():
        print(f"  model only, {name:<34} {value:8.1f} tiles/s")
    e2e, n = end_to_end(args.encoder, Path(args.out), args.device)
    reference = results.get("ONNX Runtime (CPU provider)") if args.device == "cpu" else max(results.values())
    print(f"  end to end, `embed` ({n} tiles of a 36-slide cohort)      {e2e:8.1f} tiles/s")
    if reference:
        print(f"  end to end / model-only reference: {e2e / reference:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
