# pairstack: make run | demo | test | bench | lint
# Every target creates the virtual environment it needs on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
HOST   ?= 127.0.0.1
PORT   ?= 5006
PANEL_ARGS := --address $(HOST) --port $(PORT) --allow-websocket-origin $(HOST):$(PORT) \
              --allow-websocket-origin localhost:$(PORT)

.PHONY: venv run demo test lint bench chromium clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

## Browser for the UI tests: Debian's chromium (the only browser these machines can install).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

run: $(STAMP)
	@echo "pairstack dashboard (live Binance, config/pairs.yaml): http://$(HOST):$(PORT)/ui"
	PAIRSTACK_CONFIG=config/pairs.yaml exec $(VENV)/bin/panel serve ui/ $(PANEL_ARGS)

demo: $(STAMP)
	@echo "pairstack dashboard (local simulator, config/demo.yaml): http://$(HOST):$(PORT)/ui"
	PAIRSTACK_CONFIG=config/demo.yaml exec $(VENV)/bin/panel serve ui/ $(PANEL_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# One BLAS thread per process: the suite runs Ray workers, a Panel server and Chromium on 2 cores,
# and oversubscribed BLAS threads slow statsmodels 10-50x there.
test: export OPENBLAS_NUM_THREADS = 1
test: export OMP_NUM_THREADS = 1
test: $(STAMP) chromium
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q tests

bench: export OPENBLAS_NUM_THREADS = 1
bench: export OMP_NUM_THREADS = 1
bench: $(STAMP) chromium
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache bench/results/*.json
