# Two entry points: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_CONFIG ?= configs/demo.yaml
# extras of the test venv; CI adds datasets (scikit-learn) so the digits tests run too
TEST_EXTRAS ?= test

.PHONY: demo test format bench figures clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[$(TEST_EXTRAS)]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/gradlab run $(DEMO_CONFIG) --force --quiet --out results/demo
	$(BIN)/gradlab plot results/demo > /dev/null
	@echo
	@echo "Results: $(CURDIR)/results/demo (metrics.csv, layers.csv, summary.json)"
	@echo "Plots:   $(CURDIR)/results/demo/plots/"
	@ls results/demo/plots | sed 's/^/           /'

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n auto  # one worker per core (pytest-xdist)

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/step_vs_torch.py
	$(BIN)/python benchmarks/run_overhead.py
	$(BIN)/python benchmarks/sweep_scaling.py

figures: $(VENV)/.installed
	docs/make_figures.sh

clean:
	rm -rf $(VENV) build *.egg-info
