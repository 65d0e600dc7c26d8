#!/usr/bin/env bash
# A GPU run ready to go (issue 30): on a machine with an accelerator and a
# JAX for it already installed, run the test suite's device-independent part
# and the benchmarks at accelerator sizes, in under 8 minutes, and write one
# JSON and one markdown table.
#
#   bash benchmarks/accelerator.sh [OUT_DIR]        # default: $OUT, else
#                                                   # ./accelerator-out
#
# That machine is offline: what it lacks travels as wheels, prepared here by
# `bash benchmarks/accelerator_wheels.sh` (Python 3.12, x86-64, into .whl/
# and .whl-rejax/); this script installs them into /tmp/site and
# /tmp/site-rejax. Our package is used from this checkout (PYTHONPATH), with
# the machine's own jax, flax, optax, chex, orbax and torch.
#
# Steps, each under its own time limit (seconds, in brackets), each writing
# OUT_DIR/<step>.json and OUT_DIR/<step>.log; a step that fails or runs out of
# time is recorded as such and the next one runs:
#   info        the card (nvidia-smi) and JAX's devices                  [30]
#   tests       the device-independent tests (TESTS below), 4 processes  [80]
#   learners    PPO at rejax's CartPole config, 1 to 4,096 seeds in one
#               vmap, and rejax's PPO beside it where its wheels came   [130]
#   envs        our CartPole at 1 to 65,536 envs (no Gymnasium)          [60]
#   lm_rl       the LM PPO and TRPO iterations at batch 64 and 512,
#               each the whole iteration as one program               [2 x 60]
#   trl         TRL 1.12.0's PPO trainer on the same GPU, and ours       [50]
# 470 s in all if every step runs to its limit, plus installing the wheels.
# then benchmarks/accelerator_report.py writes OUT_DIR/accelerator.json and
# OUT_DIR/accelerator.md.
#
# ACCELERATOR_SIZE=tiny runs every step at toy sizes (a check of this script
# on any machine, CPU included: `make accelerator-check`, with
# ACCELERATOR_WHEELS=no and the project's venvs). REJAX_PYTHON names a
# Python with rejax where no .whl-rejax travels.
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-accelerator-out}}
SIZE=${ACCELERATOR_SIZE:-full}
PY=${PYTHON:-python3}
TRL_PY=${TRL_PYTHON:-$PY}  # a Python with TRL 1.12.0 (PPO left TRL after it)
mkdir -p "$OUT_DIR"
START=$(date +%s)

WHEELS=${ACCELERATOR_WHEELS:-yes}  # no: use the Python as it is
if [ "$WHEELS" = yes ] && [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
REJAX_PY=${REJAX_PYTHON:-none}
if [ "$WHEELS" = yes ] && [ -d .whl-rejax ] && ls .whl-rejax/*.whl > /dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site-rejax .whl-rejax/*.whl || exit 1
  REJAX_PY=/tmp/rejax-python
  printf '#!/bin/sh\nPYTHONPATH=/tmp/site-rejax exec %s "$@"\n' \
    "$(command -v "$PY")" > "$REJAX_PY"
  chmod +x "$REJAX_PY"
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
# Several JAX processes (the tests' workers; JAX beside torch) share one
# card: allocate as needed instead of 75% of its memory each.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

if [ "$SIZE" = tiny ]; then
  SEEDS="1 2"; ENVS="8 64"; LM_BATCHES="8"; TRL_ARGS="--batch 4 --epochs 1 --response-length 8 --iterations 1 --warmup 1 --layers 1 --width 32 --heads 2 --vocab 64 --max-len 32 --prompt-length 4"
  LM_ARGS="--repeats 1 --whole-only"; TESTS_MARK="not slow"
  TESTS=${ACCELERATOR_TESTS:-tests/test_advantages.py tests/test_losses.py}
else
  SEEDS="1 8 64 512 4096"; ENVS="1 1024 8192 65536"; LM_BATCHES="64 512"
  TRL_ARGS="--iterations 3 --warmup 1"; LM_ARGS="--repeats 3 --whole-only"
  TESTS_MARK="not slow"
  TESTS=${ACCELERATOR_TESTS:-tests/test_advantages.py tests/test_losses.py \
tests/test_trust_region.py tests/test_fisher.py tests/test_kl_control.py \
tests/test_distributions.py tests/test_networks.py tests/test_normalization.py \
tests/test_rlhf_primitives.py tests/test_rlhf_credit.py \
tests/test_rlhf_model.py tests/test_rlhf_best_of_n.py}
fi

# step NAME SECONDS COMMAND...: runs COMMAND with a limit, records its exit
# status and time in OUT_DIR/NAME.status (the report reads it).
step() {
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s)
  echo "== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  local rc=$?
  local t1; t1=$(date +%s)
  printf '{"rc": %d, "seconds": %d, "limit": %d, "timed_out": %s}\n' \
    "$rc" "$((t1 - t0))" "$limit" \
    "$([ $rc -eq 124 ] || [ $rc -eq 137 ] && echo true || echo false)" \
    > "$OUT_DIR/$name.status"
  echo "   rc $rc in $((t1 - t0)) s"
  tail -n 3 "$OUT_DIR/$name.log"
}

step info 30 "$PY" benchmarks/accelerator_report.py --info "$OUT_DIR/info.json"
step tests 80 "$PY" -m pytest -q -p no:cacheprovider -n 4 -m "$TESTS_MARK" \
  --timeout 120 --junitxml "$OUT_DIR/tests.xml" $TESTS
# shellcheck disable=SC2086  # word lists on purpose
step learners 130 "$PY" benchmarks/learners.py --envs CartPole-v1 \
  --settings rejax --seeds $SEEDS --rows rejax,ppo \
  --rejax-python "$REJAX_PY" --json "$OUT_DIR/learners.json"
step envs 60 "$PY" benchmarks/env_throughput.py --sizes $ENVS --no-gymnasium \
  --json "$OUT_DIR/envs.json"
for b in $LM_BATCHES; do
  step "lm_rl_$b" 60 "$PY" benchmarks/rlhf_rl.py --batch "$b" $LM_ARGS \
    --json "$OUT_DIR/lm_rl_$b.json"
done
TORCH_DEVICE=$("$TRL_PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")' 2>/dev/null || echo cpu)
step trl 50 env XLA_PYTHON_CLIENT_MEM_FRACTION=0.4 "$TRL_PY" benchmarks/rlhf_trl.py \
  --device "$TORCH_DEVICE" \
  $TRL_ARGS --json "$OUT_DIR/trl.json"

"$PY" benchmarks/accelerator_report.py --out "$OUT_DIR" \
  --seconds "$(( $(date +%s) - START ))"
