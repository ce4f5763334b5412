#!/usr/bin/env bash
# Fill benchmarks/wheels/ with what detgn needs beyond torch/torchvision on a bare CUDA machine with
# Python 3.12 that cannot reach PyPI (carry the folder there; gpu_check.sh installs from it).
# fvcore, iopath and yacs only ship source on PyPI: they are pure Python, so they are built into
# py3-none-any wheels here; pycocotools and the rest are downloaded as cp312 binary wheels.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
mkdir -p wheels
$PY -m pip wheel -q --no-deps -w wheels fvcore iopath yacs
$PY -m pip download -q -d wheels --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --only-binary=:all: --no-deps pycocotools tabulate termcolor portalocker pyyaml tqdm
ls wheels
