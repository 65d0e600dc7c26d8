# Two commands on a fresh machine with Python >= 3.10:
#   make demo   run the main job (creates .venv and installs what it needs)
#   make test   run the whole test suite, slow tests included (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: demo test test-fast bench bench-learners bench-peers bench-rlhf-trl \
	bench-rlhf-trl-family bench-rlhf-tunix bench-mjx accelerator-wheels accelerator-check clean

demo: $(VENV)/.installed-run
	$(BIN)/python -m jaxrl_align demo --overwrite

# Test files spread over TEST_WORKERS processes (pytest-xdist), each file
# whole in one (its module fixtures built once); 2 for a 2-core machine.
TEST_WORKERS ?= 2
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow"

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/primitives.py

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is required")'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt -e '.[rlhf]'
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .venv-rejax .venv-trl .venv-tunix .venv-peers .venv-mjx .pytest_cache .hypothesis *.egg-info

# rejax 0.1.3 needs gymnax 0.0.9, which conflicts with ours: its own venv.
.venv-rejax/bin/python:
	$(PYTHON) -m venv .venv-rejax
	.venv-rejax/bin/python -m pip install --quiet "rejax==0.1.3" "gymnax==0.0.9" "jax==0.10.2" "jaxlib==0.10.2"

bench-learners: $(VENV)/.installed-test .venv-rejax/bin/python
	$(BIN)/python benchmarks/learners.py --rejax-python .venv-rejax/bin/python

# TRL's PPO against ours in one process: jax, our package and trl with torch.
.venv-trl/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is required")'
	test -x .venv-trl/bin/python || $(PYTHON) -m venv .venv-trl
	# constraints.txt pins the test extra's TRL (1.16.0); this venv has 1.12.0
	sed '/^trl==/d' constraints.txt > .venv-trl/constraints.txt
	.venv-trl/bin/python -m pip --disable-pip-version-check install --quiet -c .venv-trl/constraints.txt -e '.[rlhf,trl]'
	touch $@

bench-rlhf-trl: .venv-trl/.installed
	.venv-trl/bin/python benchmarks/rlhf_trl.py

# TRL's GRPO, RLOO and DPO trainers against ours in one process: trl 1.16.0
# is in the test extra, so the main venv runs it.
bench-rlhf-trl-family: $(VENV)/.installed-test
	$(BIN)/python benchmarks/rlhf_trl_family.py

# google-tunix's GRPO and DPO against ours in one process: tunix 0.1.7 takes
# the jax, flax and optax ours uses; our package goes in without its extras.
.venv-tunix/.installed: pyproject.toml
	test -x .venv-tunix/bin/python || $(PYTHON) -m venv .venv-tunix
	.venv-tunix/bin/python -m pip --disable-pip-version-check install --quiet "google-tunix==0.1.7" "jax==0.10.2" "jaxlib==0.10.2" "flax==0.12.8" "optax==0.2.8" -e .
	touch $@

bench-rlhf-tunix: .venv-tunix/.installed
	.venv-tunix/bin/python benchmarks/rlhf_tunix.py

# MJX (MuJoCo in JAX) against MuJoCo's C engine on Gymnasium's models:
# mujoco-mjx 3.17.0 installs beside mujoco 4.0.0 and jax 0.10.2.
.venv-mjx/.installed: pyproject.toml constraints.txt
	test -x .venv-mjx/bin/python || $(PYTHON) -m venv .venv-mjx
	.venv-mjx/bin/python -m pip --disable-pip-version-check install --quiet -c constraints.txt "mujoco-mjx==3.17.0" "trimesh==5.2.0" "etils[epath]==1.15.0" "gymnasium[mujoco]" -e .
	touch $@

bench-mjx: .venv-mjx/.installed
	.venv-mjx/bin/python benchmarks/mjx_check.py

# The GPU run (benchmarks/accelerator.sh): its wheels for the offline GPU
# machine (Python 3.12), and a check of the script at toy sizes on this one.
accelerator-wheels:
	bash benchmarks/accelerator_wheels.sh

accelerator-check: $(VENV)/.installed-test .venv-trl/.installed .venv-rejax/bin/python
	rm -rf accelerator-out/check
	ACCELERATOR_SIZE=tiny ACCELERATOR_WHEELS=no PYTHON=$(BIN)/python TRL_PYTHON=.venv-trl/bin/python REJAX_PYTHON=.venv-rejax/bin/python bash benchmarks/accelerator.sh accelerator-out/check

# The peers (SB3, sb3-contrib, SBX, rejax) in their own venv; ours runs in $(VENV).
.venv-peers/.installed:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is required")'
	test -x .venv-peers/bin/python || $(PYTHON) -m venv .venv-peers
	.venv-peers/bin/python -m pip --disable-pip-version-check install --quiet "stable-baselines3==2.9.2" "sb3-contrib==2.9.2" "sbx-rl==0.28.0" "torch==2.13.0" "rejax==0.1.3" "gymnax==0.0.9" "jax==0.10.2" "jaxlib==0.10.2" "mujoco==4.0.0" "imageio==2.38.1"
	touch $@

bench-peers: $(VENV)/.installed-test .venv-peers/.installed
	$(BIN)/python benchmarks/peers.py --peer-python .venv-peers/bin/python
