# Two entry points for a fresh machine: `make demo` and `make test`. Both build .venv idempotently:
# the demo installs mrisr alone; the tests add the test and cluster extras (pytest, ruff, mypy,
# snakemake and its SLURM plugin) on top, so their stamp implies the demo's.
# `make corpus` builds the training corpus on top of the demo's install.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mrisr-installed
STAMP_TEST := $(VENV)/.mrisr-installed-test
TORCH_PIN := torch==2.13.0

.PHONY: demo test lint venv clean corpus

venv: $(STAMP_TEST)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch is pinned only when none is importable, so a user's own (GPU) build is kept.
$(STAMP): pyproject.toml | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e .
	@touch $(STAMP)

$(STAMP_TEST): $(STAMP)
	$(PY) -m pip install -q -e '.[test,cluster]'
	@touch $(STAMP_TEST)

demo: $(STAMP)
	$(VENV)/bin/mrisr demo --out demo-out

test: $(STAMP_TEST)
	$(PY) -m pytest -q

# The training corpus (docs/training.md): pinned packages from PyPI and Debian (pip download,
# apt-get download), converted to NIfTI with SOURCES.tsv and the licence notices. Rerunnable.
CORPUS ?= corpus
corpus: $(STAMP)
	$(PY) benchmarks/corpus.py $(CORPUS)

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check mrisr tests examples benchmarks
	$(VENV)/bin/ruff format --check mrisr tests examples benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) demo-out
