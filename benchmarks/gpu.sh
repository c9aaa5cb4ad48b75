#!/usr/bin/env bash
# The GPU figures of the README's "Speed" section, in one go, on one CUDA machine.
#
#   bash benchmarks/gpu.sh OUT_DIR [FASHION_MNIST_DIR]
#
# FASHION_MNIST_DIR holds the four Fashion-MNIST IDX files (default: Debian's
# /usr/share/datasets/fashion-mnist); on a machine with no network, copy them beside the
# checkout first. Needs python3 with CUDA torch, torchvision and pillow; the engine runs
# from this checkout (PYTHONPATH), nothing is installed. Writes one JSON per measurement
# into OUT_DIR and prints each table, after running tests/gpu. Sized to finish in well
# under ten minutes.
set -euo pipefail

out=$(realpath -m "${1:?usage: bash benchmarks/gpu.sh OUT_DIR [FASHION_MNIST_DIR]}")
fashion=$(realpath -m "${2:-/usr/share/datasets/fashion-mnist}")
jpegs=${TMPDIR:-/tmp}/mile-imagenet
mkdir -p "$out"
cd "$(dirname "$0")/.."  # the checkout: its mile.toml and its engine
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

bench() {  # bench NAME SETTINGS...: one throughput run, its JSON in OUT_DIR
    local name=$1
    shift
    echo "== $name"
    python3 benchmarks/throughput.py --out "$out/throughput-$name.json" "$@"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"

# The CUDA paths' tests first (bf16, fp16, channels_last, cross-device resume, nvjpeg);
# the measurements below run whatever they say.
echo "== tests/gpu"
python3 -m pytest tests/gpu -q -p no:cacheprovider 2>&1 | tee "$out/tests-gpu.txt" \
    || echo "warning: some GPU tests failed (see $out/tests-gpu.txt)"

# Grids: the issue's defaults (batch 64), then DESIGN.md's ceiling batch (256), eager
# and compiled. Fashion-MNIST grids are 84x84.
grids=(--set dataset=fashion-mnist --set "mnist_path=$fashion")
bench fashion-b64 "${grids[@]}"
bench fashion-b256 "${grids[@]}" --set batch_size=256
bench fashion-b256-compile "${grids[@]}" --set batch_size=256 --set compile=true

# ImageNet-shaped JPEGs (500x375, 1000 class folders): resnet50 at 224x224, decoding in
# the worker processes against decoding on the GPU.
python3 benchmarks/make_imagenet.py "$jpegs" --classes 1000 --per-class 8 --val 1000
workers=$(( $(nproc) - 2 ))
imagenet=(--set dataset=imagenet --set model=resnet50 --set batch_size=256
          --set "num_workers=$workers" --set "data_path=$jpegs/train"
          --set "val_path=$jpegs/val" --set "real_path=$jpegs/real.json")
bench imagenet-r50-workers "${imagenet[@]}" --set decode=workers
bench imagenet-r50-device "${imagenet[@]}" --set decode=device
