# labkit: `make run` executes every notebook headless, `make test` runs the tests.
# The first use of any target creates .venv and installs labkit into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= fast
OUT    ?= runs/latest
TEST_JOBS ?= 2

.PHONY: run test chromium lab bench venv clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## run: execute notebooks/ in order (fast profile) into runs/latest/ (+ HTML, summary.json)
run: $(STAMP)
	$(BIN)/labkit notebooks run --profile $(PROFILE) --out $(OUT)

CHROMIUM := /usr/bin/chromium
# jupyter refuses to start as root (containers, cloud notebooks) without this flag
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

## test: the whole test suite (unit, property, notebook, browser), on TEST_JOBS worker processes
## of one PyTorch thread each (tests/conftest.py says why); TEST_JOBS=0 runs it in one process.
## The browser test drives Debian's chromium: installed here with apt-get when
## missing and running as root (CI, containers); otherwise one line says how.
test: $(STAMP) chromium
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadgroup

chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make test: installing Debian's chromium for the browser test (apt-get install chromium)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "make test: $(CHROMIUM) not found; the browser test will fail until you run: sudo apt-get install chromium"; \
	fi

## lab: JupyterLab on localhost only, token authentication on (--allow-root when run as root)
lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.open_browser=False $(ROOT_FLAG) notebooks/

## bench: the benchmark scripts (speed ratios against in-process references)
bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf runs/ .pytest_cache
