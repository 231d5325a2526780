# The quick start: `make demo` (train the demo with the monitors, write TensorBoard logs) and `make test`.
# Each target creates/updates the local virtual environment .venv and installs what it needs with pip.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-fast venv bench clean docs docs-pictures

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch/torchvision are installed first with the pair that resolves from this machine's disk; on other
# machines pip resolves the same pins from PyPI (pyproject.toml itself only declares ranges).
$(VENV)/.installed-core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e ".[wandb,cli]"
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed-core
	$(BIN)/python -m pip install --quiet -e ".[wandb,cli,test]"
	touch $@

$(VENV)/.installed-docs: pyproject.toml $(VENV)/.installed-core
	$(BIN)/python -m pip install --quiet -e ".[wandb,cli,docs]"
	touch $@

venv: $(VENV)/.installed-core

demo: $(VENV)/.installed-core
	$(BIN)/lightning-xai demo $(ARGS)

# `make test`: the whole suite (tests/ and the doctests of lightning_xai/; pyproject: testpaths, --doctest-modules),
# then the `numerics`-marked tests again with ATen's portable kernels (ATEN_CPU_CAPABILITY=default: no AVX2/AVX-512
# vectorisation), so a test that only passes with this CPU's reduction order fails here, not on the next machine.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n 2 --dist loadfile -q $(ARGS)
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -m numerics -n 2 --dist loadfile -q $(ARGS)

# For development: everything but the slow and the process-spawning (DDP) tests.
test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n 2 --dist loadfile -q -m "not slow and not ddp" $(ARGS)

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_attribution.py $(ARGS)

# The documentation site (MkDocs + Material + mkdocstrings): regenerate the monitor-arguments table from the
# signatures, then build site/ with warnings as errors. `$(BIN)/mkdocs serve` previews it.
docs: $(VENV)/.installed-docs
	$(BIN)/python docs/gen_monitor_table.py
	$(BIN)/mkdocs build --strict

# README pictures come from the current code: this regenerates docs/saliency_evolution.png from the demo.
docs-pictures: $(VENV)/.installed-core
	$(BIN)/lightning-xai demo --log-dir demo_logs
	cp demo_logs/saliency_evolution.png docs/saliency_evolution.png
	$(BIN)/python docs/gen_pictures.py demo_logs

clean:
	rm -rf $(VENV) demo_logs lightning_logs .pytest_cache site
