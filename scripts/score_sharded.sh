#!/usr/bin/env bash
# Score a manifest with one process per GPU, then merge the shards into one scores.csv.
#
#   scripts/score_sharded.sh BUNDLE MANIFEST OUT [N_GPUS] [extra key=value overrides...]
#
# Each shard takes every N-th patient of the manifest (a patient's slides stay together) and
# writes its per-slide results into OUT; `merge` then writes OUT/scores.csv and
# OUT/patient_scores.csv exactly as one process would have. Rerunning resumes every shard.
# On SLURM use Hydra's submitit launcher instead (one job per shard):
#   wsi-prognosis score --multirun bundle=B manifest=M out=O shard=0/8,1/8,2/8,3/8,4/8,5/8,6/8,7/8 \
#       hydra/launcher=submitit_slurm hydra.launcher.gpus_per_node=1 && wsi-prognosis merge out=O
set -euo pipefail
bundle=$1 manifest=$2 out=$3
n=${4:-$(nvidia-smi -L 2>/dev/null | wc -l)}
n=$(( n > 0 ? n : 1 ))
shift $(( $# >= 4 ? 4 : 3 ))
bin=${WSI_PROGNOSIS:-wsi-prognosis}   # the entry point (e.g. .venv/bin/wsi-prognosis)
mkdir -p "$out"
pids=()
for ((i = 0; i < n; i++)); do
  device=${WSI_DEVICE:-cuda:$i}        # WSI_DEVICE=cpu: every shard on the CPU (for a dry run)
  "$bin" score bundle="$bundle" manifest="$manifest" out="$out" shard="$i/$n" engine.device="$device" \
    hydra.output_subdir=".hydra/shard-$i" "$@" \
    > "$out/shard-$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
if (( status != 0 )); then echo "a shard failed (see $out/shard-*.log); rerun to resume" >&2; exit "$status"; fi
"$bin" merge out="$out"
