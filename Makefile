# labkit: `make run` executes every notebook headless, `make test` runs the tests.
# The first use of any target creates .venv and installs labkit into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= fast
OUT    ?= runs/latest

.PHONY: run test lab bench venv clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## run: execute notebooks/ in order (fast profile) into runs/latest/ (+ HTML, summary.json)
run: $(STAMP)
	$(BIN)/labkit notebooks run --profile $(PROFILE) --out $(OUT)

## test: the whole test suite (unit, property, notebook, browser)
test: $(STAMP)
	$(BIN)/python -m pytest

## lab: JupyterLab on localhost only, token authentication on
lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.open_browser=False notebooks/

## bench: the benchmark scripts (speed ratios against in-process references)
bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf runs/ .pytest_cache
