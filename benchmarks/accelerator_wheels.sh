#!/usr/bin/env bash
# The wheels benchmarks/accelerator.sh needs on the GPU machine, which is
# offline and has Python 3.12 with jax (CUDA), flax, optax, chex, orbax,
# torch, transformers, accelerate, pytest and pytest-xdist already (the
# device tool's package list): run here, with the registries in reach.
#   .whl/        our other dependencies, TRL 1.12.0 and what it adds
#   .whl-rejax/  rejax 0.1.3 and gymnax 0.0.9 (which conflicts with ours),
#                installed apart, for the rejax row
# Both folders are git-ignored; carry them with the run (`carry`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
download() {  # download DIR SPEC...: pure or manylinux x86-64 wheels
  local dir=$1; shift
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any -d "$dir" "$@"
}
download .whl gymnax==1.0.1 gymnasium==1.3.0 farama-notifications==0.0.6 \
  tensorboardX==2.6.5 vaderSentiment==3.3.2 \
  trl==1.12.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
download .whl-rejax rejax==0.1.3 gymnax==0.0.9 distrax==0.1.9 \
  tfp-nightly==0.26.0.dev20261027 gast==0.7.0 decorator==5.3.2 \
  gymnasium==1.3.0 farama-notifications==0.0.6
du -sh .whl .whl-rejax
