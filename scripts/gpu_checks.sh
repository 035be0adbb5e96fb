#!/usr/bin/env bash
# Every GPU check of the project in one call (the lent GPU machine has 15 minutes in all):
# the CUDA engine tests, the scoring benchmark (issue 5: the benchmark slide, ten MobileNetV2
# members, <= 10 s on one H100), the training benchmark (issue 4: pipeline / model-only) and one
# fine-tuning step's tiles/s at bf16 (issue 19: lite0, a small ViT, a ViT-L; all and last:1).
#
#   here:   bash scripts/gpu_wheels.sh                       # once: the wheels the GPU image lacks
#   there:  bash scripts/gpu_checks.sh                       # device tool: carry [".whl"], timeout 600
#
# Figures and logs go to $OUT (the device tool's return folder) or ./gpu_out. About 4 minutes:
# building the 971 MB benchmark slide takes about 40 s, tiling it 2 s.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
status=0
step() {  # step NAME COMMAND...: run, keep its log, remember a failure, go on
    local name=$1; shift
    echo "== $name: $*"
    local started=$SECONDS
    "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - started)) s"
    [ "$rc" -eq 0 ] || status=1
}
step gpu nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step versions python3 -c "import sys, torch, timm, openslide; print(sys.version.split()[0], 'torch', torch.__version__, 'timm', timm.__version__, 'openslide', openslide.__library_version__, torch.cuda.get_device_name(0))"
step cuda_tests python3 -m pytest -q -p no:cacheprovider tests/scoring/test_score_cuda.py
step bench_score python3 scripts/bench_score.py --device cuda --json "$OUT/bench_score.json"
step bench_train python3 scripts/bench_train.py --device cuda --steps 40 --warmup 8
# embedding tiles/s: lite0 at bf16 (and the CPU runtimes beside it), then a UNI-sized ViT-L and a Virchow-2-sized
# ViT-H (random weights) at bf16
step bench_embed python3 scripts/bench_embed.py --device cuda --seconds 5 --batch 256
step bench_encoders python3 scripts/bench_encoders.py --device cuda --batch 256 --repeats 5 lite0 uni virchow2
step bench_finetune python3 scripts/bench_finetune.py --device cuda --steps 10 --warmup 3 --json "$OUT/bench_finetune.json" \
    --encoders lite0 vit timm:vit_large_patch16_224
exit $status
