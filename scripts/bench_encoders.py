#!/usr/bin/env python
"""Embedding throughput of named encoders on this machine's CPU: tiles/s per encoder and runtime.

    PYTHONPATH=. .venv/bin/python scripts/bench_encoders.py                    # lite0 and a UNI-sized ViT-L
    PYTHONPATH=. .venv/bin/python scripts/bench_encoders.py uni virchow2 --runtimes torch --batch 16

Each encoder runs exactly as `embed` runs it (`TileEmbedder`: uint8 tiles at the encoder's input px ->
scaling, normalisation, the network), on random uint8 batches of `--batch` tiles, fp32, with torch eager
and with ONNX Runtime (exported from the same module, cached under $WSI_PROGNOSIS_CACHE). An encoder whose
published weights are not on this machine is built with random weights of the same architecture (the
throughput is the same), and the table says so. One warm-up batch, then `--repeats` timed batches; the
export (ONNX) and the build are not timed. The machine may be shared: the load average is printed with
the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def loaded(name: str):
    """(LoadedEncoder, weights label): the published weights if present here, else random ones (seed 0)."""
    import torch

    from wsi_prognosis.encoders import get_encoder, load_encoder
    from wsi_prognosis.encoders.registry import LoadedEncoder, encoder_identity
    from wsi_prognosis.errors import EncoderError

    try:
        encoder = load_encoder(name)
        return encoder, "published" if encoder.weights_path else "random (preset)"
    except EncoderError:
        spec = get_encoder(name)
        torch.manual_seed(0)
        model = spec.build().eval()
        for p in model.parameters():
            p.requires_grad_(False)
        sha = "random:bench-seed0"
        return LoadedEncoder(spec=spec, model=model, weights_path=None, weights_sha256=sha,
                             identity=encoder_identity(spec, sha)), "random (published ones absent)"


def bench(name: str, runtime: str, batch: int, repeats: int, threads: int, device: str = "cpu") -> dict:
    from wsi_prognosis.encoders import EmbedderConfig, TileEmbedder

    encoder, weights = loaded(name)
    spec = encoder.spec
    params = sum(p.numel() for p in encoder.model.parameters()) / 1e6
    tiles = np.random.default_rng(0).integers(0, 256, size=(batch, spec.input_px, spec.input_px, 3), dtype=np.uint8)
    start = time.perf_counter()
    embedder = TileEmbedder(encoder, spec.input_px, EmbedderConfig(runtime=runtime, device=device, batch_tiles=batch,
                                                                     threads=threads, bf16=True))
    setup_s = time.perf_counter() - start
    embedder.embed(tiles)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        out = embedder.embed(tiles)
    elapsed = time.perf_counter() - start
    assert out.shape == (batch, spec.dim)
    return {"encoder": name, "runtime": runtime + (" bf16 " + device if device != "cpu" else ""), "weights": weights, "params_m": round(params, 1),
            "input_px": spec.input_px, "batch": batch, "threads": embedder.threads,
            "tiles_per_s": round(batch * repeats / elapsed, 3), "s_per_batch": round(elapsed / repeats, 2),
            "setup_s": round(setup_s, 1), "load_average": load_average()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=["lite0", "uni"], help="registered encoder names")
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"])
    parser.add_argument("--batch", type=int, default=16, help="tiles per batch")
    parser.add_argument("--repeats", type=int, default=2, help="timed batches")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: every core this process may use)")
    parser.add_argument("--json", action="store_true", help="print one JSON line per result as well")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: torch bf16 channels_last on the GPU")
    args = parser.parse_args()
    print(f"{'encoder':<12} {'runtime':<7} {'params':>8} {'px':>4} {'tiles/s':>8} {'s/batch':>8} {'setup s':>8}  weights "
          f"(batch {args.batch}, {'fp32, CPU' if args.device == 'cpu' else 'bf16, ' + args.device})")
    runtimes = args.runtimes if args.device == "cpu" else ["torch"]
    for name in args.names:
        for runtime in runtimes:
            r = bench(name, runtime, args.batch, args.repeats, args.threads, args.device)
            print(f"{r['encoder']:<12} {r['runtime']:<7} {r['params_m']:>7.1f}M {r['input_px']:>4} {r['tiles_per_s']:>8.2f} "
                  f"{r['s_per_batch']:>8.2f} {r['setup_s']:>8.1f}  {r['weights']}; threads {r['threads']}, load "
                  f"{r['load_average']}", flush=True)
            if args.json:
                print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
