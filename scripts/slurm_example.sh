#!/usr/bin/env bash
# Train the DoMore-style ensemble on a SLURM cluster, then select the bundle.
#
# Each sweep job is one member (resolution x seed), submitted by hydra-submitit-launcher as a
# SLURM array job; each writes ${RUNS}/<member>/ and resumes from its last.ckpt when requeued.
# Run this on the login node (it only submits and waits). Adjust partition, account, time.
set -euo pipefail

DATA=${DATA:-/data/crc}
RUNS=${RUNS:-$DATA/runs}
BUNDLE=${BUNDLE:-$DATA/bundle}
FEATURES=${FEATURES:-$DATA/features}

# 0. the frozen encoder's features of every tile (lite0 by default), 4 shards, one GPU each
wsi-prognosis embed \
  hydra/launcher=submitit_slurm \
  hydra.launcher.partition=gpu \
  hydra.launcher.account=myproject \
  hydra.launcher.timeout_min=240 \
  'hydra.launcher.setup=["module load cuda/12.4","source .venv/bin/activate"]' \
  tiles="$DATA/tiles" out="$FEATURES" manifest="$DATA/manifest.csv" \
  shard=0/4,1/4,2/4,3/4 \
  --multirun

# 1. candidates: 2 resolutions x 8 seeds = 16 members (heads on the features: a few minutes each)
wsi-prognosis train \
  hydra/launcher=submitit_slurm \
  hydra.launcher.partition=gpu \
  hydra.launcher.account=myproject \
  hydra.launcher.timeout_min=720 \
  hydra.launcher.cpus_per_task=8 \
  hydra.launcher.mem_gb=64 \
  'hydra.launcher.setup=["module load cuda/12.4","source .venv/bin/activate"]' \
  manifest="$DATA/manifest.csv" clinical="$DATA/clinical.csv" tiles="$DATA/tiles" features="$FEATURES" \
  out="$RUNS" resolution=10x,40x seed=0,1,2,3,4,5,6,7 \
  --multirun

# DoMore's own way, CNNs from scratch on pixels (no embed step): add experiment=scratch and drop features=.
# One such member on 2 nodes x 4 GPUs (Lightning DDP; submitit starts one task per GPU):
# wsi-prognosis train hydra/launcher=submitit_slurm hydra.launcher.partition=gpu experiment=scratch \
#   trainer.devices=4 trainer.num_nodes=2 trainer.strategy=ddp \
#   manifest=... clinical=... tiles=... out="$RUNS" resolution=40x seed=0 --multirun

# 2. the 5 best members per resolution on the tuning cohort -> a verified bundle
wsi-prognosis select runs="$RUNS" out="$BUNDLE" k=5
