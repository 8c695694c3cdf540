# Two commands do all set-up on a fresh machine with Python 3.11:
#   make quickstart   - create .venv, install closedloop, run the quickstart pipeline, print the report path
#   make test         - create .venv, install closedloop with test tools, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: quickstart test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,serve,mlflow,trees,scale]"
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/closedloop run configs/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -n auto --dist loadfile --durations=25

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_quickstart.py

clean:
	rm -rf $(VENV) runs build *.egg-info
