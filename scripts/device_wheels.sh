#!/usr/bin/env bash
# Fill .whl/ with the wheels scripts/device_check.sh installs on a GPU machine that reaches no package registry
# (Python 3.12 with its own torch, numpy, scipy, scikit-image, ...): the project's dependencies that such a machine
# lacks, pure-Python wheels; the sdists (sam2, grad-cam, antlr4, iopath) are built here with .venv's pip.
# Run where the registry is reachable, after scripts/setup.sh. About 4 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PLATFORM="--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
--platform manylinux2014_x86_64 --platform any"
for pkg in arrow==1.4.0 tzdata construct==2.10.70 construct-typing==0.8.1 eyepy==0.21.0 hydra-core==1.3.8 \
           lazy-importer==0.1.0 natsort==8.4.0 oct-converter==0.7.0 omegaconf==2.3.1 pydicom==3.0.2 ttach==0.0.3 \
           zennit==0.5.1; do
    python3 -m pip download -q --no-deps --only-binary=:all: $PLATFORM -d .whl "$pkg"
done
SAM2_BUILD_CUDA=0 .venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w .whl \
    grad-cam==1.5.7 sam2==1.1.0 antlr4-python3-runtime==4.9.3 iopath==0.1.10
ls .whl
