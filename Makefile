# Two commands on a fresh machine: `make serve` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.memoryd-installed
MODEL_DIR := var/models/SmolLM2-135M-Instruct
export MEMORYD_CONFIG ?= configs/default.yaml

# vLLM for NVIDIA GPUs when one answers, the CPU build otherwise (scripts/install.sh).
VLLM_PACKAGE ?= auto

.PHONY: install system-deps model serve test lint bench-knowledge clean

install: $(STAMP) system-deps

$(STAMP): pyproject.toml scripts/install.sh
	scripts/install.sh --venv $(VENV) --vllm $(VLLM_PACKAGE) --dev
	touch $(STAMP)

system-deps:
	@command -v redis-server >/dev/null || { apt-get update -q && apt-get install -y -q redis-server; }
	@command -v systemd-analyze >/dev/null || { apt-get update -q && apt-get install -y -q systemd; }
	@command -v openssl >/dev/null || { apt-get update -q && apt-get install -y -q openssl; }
	@# The dashboard's browser tests run Debian's Chromium through Playwright.
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium; }

model: install
	$(PY) -m daemon.bundled_model $(MODEL_DIR)

serve: install
	$(VENV)/bin/memoryd serve

test: model
	MEMORYD_TEST_MODEL=$(abspath $(MODEL_DIR)) $(VENV)/bin/pytest -v --durations=15

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy daemon consolidator bench tests

bench-knowledge: model
	$(PY) bench/knowledge.py

clean:
	rm -rf $(VENV) var
