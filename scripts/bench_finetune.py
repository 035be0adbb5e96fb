#!/usr/bin/env python
"""Fine-tuning throughput: tiles/s of one training step of a fine-tuned member (model.finetune), per encoder.

One step is what `train` does per batch with `model.finetune=all|last:N`: a batch of `--bags` bags x
`--tiles` tiles (uint8, in memory, at the encoder's input px unless --tile-px), the encoder and the
attention head forward, the outcome loss, backward and an AdamW step over the module's parameter groups
(`FinetuneModule`, built as `finetune_training` builds it: trainable part marked, gradient checkpointing
for ViTs, channels_last for CNNs). On CUDA under bf16 autocast (Lightning's bf16-mixed), on CPU in float32.
Model only: reading and augmenting tiles are not counted (scripts/bench_train.py measures the pipeline).

Throughput does not depend on the weights, so an encoder whose weights are not installed is timed with
the registry's architecture at random init (said in the output). `timm:ARCH` times a timm architecture
that is not in the registry (random init, 224 px, ImageNet mean/std).

    .venv/bin/python scripts/bench_finetune.py --device cpu                       # lite0 + a ViT, 4 x 16 tiles
    python scripts/bench_finetune.py --device cuda --encoders lite0 vit timm:vit_large_patch16_224   # gpu_checks.sh
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def default_vit() -> str:
    """The registry's small random ViT when this version has one, else timm's ViT-S/16 at random init."""
    from wsi_prognosis.encoders import list_encoders

    return "random-vit-s" if "random-vit-s" in list_encoders() else "timm:vit_small_patch16_224"


def loaded_encoder(name: str):
    """(LoadedEncoder, note): the registry's encoder with its weights when present, else its architecture at
    random init; `timm:ARCH` a timm network wrapped in an ad-hoc spec."""
    import timm
    from torch import nn

    from wsi_prognosis.encoders import EncoderSpec, LoadedEncoder, get_encoder, load_encoder
    from wsi_prognosis.errors import EncoderError
    from wsi_prognosis.models.backbone import IMAGENET_MEAN, IMAGENET_STD

    if name.startswith("timm:"):
        arch = name.split(":", 1)[1]
        model: nn.Module = timm.create_model(arch, pretrained=False, num_classes=0)
        px = int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
        spec = EncoderSpec(name=name, summary=arch, construction=f"timm {arch}", dim=int(model.num_features),
                           input_px=px, mean=IMAGENET_MEAN, std=IMAGENET_STD, mpp=None, licence="-",
                           build=lambda: model)
        return LoadedEncoder(spec=spec, model=model, weights_path=None, weights_sha256=None), "random init"
    try:
        return load_encoder(name), "its weights"
    except EncoderError:
        spec = get_encoder(name)
        return LoadedEncoder(spec=spec, model=spec.build(), weights_path=None, weights_sha256=None), \
            "random init (weights not installed here; same speed)"


def bench(name: str, finetune: str, *, bags: int, tiles: int, tile_px: int | None, steps: int, warmup: int,
          device: str, grad_checkpointing: bool) -> dict:
    import torch

    from wsi_prognosis.encoders.blocks import parse_finetune
    from wsi_prognosis.models.finetune_lit import FinetuneModule, network_for
    from wsi_prognosis.models.finetune_training import mark_trainable
    from wsi_prognosis.models.heads import HeadConfig

    loaded, note = loaded_encoder(name)
    mode = parse_finetune(finetune)
    family = mark_trainable(loaded, mode, grad_checkpointing=grad_checkpointing)
    px = int(tile_px or loaded.spec.input_px)
    network = network_for(loaded.spec, loaded.model, tile_px=px, head=HeadConfig(), channels_last=family == "cnn")
    module = FinetuneModule(network, {"lr": 1e-4, "weight_decay": 0.01}).to(device)
    module.log = lambda *args, **kwargs: None   # no Trainer here: outcome_loss logs
    optimizer = torch.optim.AdamW(module.param_groups(), lr=1e-4, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (bags, tiles, px, px, 3), dtype=torch.uint8, generator=generator).to(device)
    y = torch.tensor([float(i % 2) for i in range(bags)], device=device)
    time_, event = torch.arange(1.0, bags + 1.0, device=device), torch.ones(bags, device=device)
    cuda = torch.device(device).type == "cuda"

    def step() -> None:
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=cuda):
            loss = module.outcome_loss(module(batch).float(), y, time_, event)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    trained = sum(p.numel() for p in network.encoder.parameters() if p.requires_grad)
    return {
        "encoder": name, "weights": note, "finetune": str(mode), "family": family or "-", "tile_px": px,
        "input_px": int(loaded.spec.input_px), "tiles_per_step": bags * tiles, "step_s": round(seconds, 4),
        "tiles_per_s": round(bags * tiles / seconds, 1), "encoder_params_m": round(
            sum(p.numel() for p in network.encoder.parameters()) / 1e6, 2), "trained_params_m": round(trained / 1e6, 2),
        "grad_checkpointing": bool(grad_checkpointing and family == "vit"),
        "precision": "bf16-mixed" if cuda else "32-true",
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--encoders", nargs="+", default=["lite0", "vit"],
                        help="registry names, timm:ARCH, or vit (random-vit-s when registered, else timm's ViT-S/16)")
    parser.add_argument("--finetune", nargs="+", default=["all", "last:1"])
    parser.add_argument("--bags", type=int, default=4)
    parser.add_argument("--tiles", type=int, default=16, help="tiles per bag")
    parser.add_argument("--tile-px", type=int, default=None, help="tile size (default: the encoder's input px)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-grad-checkpointing", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here too")
    args = parser.parse_args()

    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(threads)
        where = f"CPU, {threads} threads, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    else:
        where = torch.cuda.get_device_name(torch.device(device))
    encoders = [default_vit() if name == "vit" else name for name in args.encoders]
    print(f"fine-tuning step throughput on {where}; {args.bags} bags x {args.tiles} tiles per step, "
          f"{args.steps} timed steps after {args.warmup}", flush=True)
    rows = []
    for name in encoders:
        for finetune in args.finetune:
            row = bench(name, finetune, bags=args.bags, tiles=args.tiles, tile_px=args.tile_px, steps=args.steps,
                        warmup=args.warmup, device=device, grad_checkpointing=not args.no_grad_checkpointing)
            rows.append(row)
            memory = f", peak {row['peak_gib']} GiB" if row["peak_gib"] is not None else ""
            print(f"  {name:28s} {row['finetune']:7s} {row['tiles_per_s']:9.1f} tiles/s  ({row['step_s']:.3f} s/step, "
                  f"{row['trained_params_m']}/{row['encoder_params_m']} M params trained, {row['tile_px']} px, "
                  f"{row['precision']}{', checkpointed' if row['grad_checkpointing'] else ''}{memory}; {row['weights']})",
                  flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": where, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
