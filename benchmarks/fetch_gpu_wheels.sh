#!/usr/bin/env bash
# Download cp312 wheels of detgn's pure-Python dependencies (and pycocotools) into benchmarks/wheels/,
# for carrying to a bare CUDA machine (Python 3.12) that cannot reach PyPI.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip download -q -d wheels --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --only-binary=:all: pycocotools fvcore iopath yacs tabulate termcolor portalocker pyyaml tqdm numpy
ls wheels
