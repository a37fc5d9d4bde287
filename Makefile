# The two commands a newcomer needs: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 5000
DATA_DIR ?= kiln-data

.PHONY: run test install test-deps lint lock docs bench lab clean

# requirements.lock pins every version `make run` and CI install (pip-tools; `make lock` remakes it
# from pyproject.toml's ranges). kiln itself is installed from the tree without resolving again.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/kiln --data-dir $(DATA_DIR) demo
	$(BIN)/kiln --data-dir $(DATA_DIR) serve --host $(HOST) --port $(PORT)

# Chromium comes from Debian where we may install it (root, apt available); the browser
# tests skip loudly without it, except under CI=true where they must run.
test-deps:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Chromium from Debian for the browser tests..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null || true; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check kiln tests bench examples
	$(BIN)/ruff format --check kiln tests bench examples
	$(BIN)/mypy
	$(BIN)/python -m kiln.docs_gen --check

test: $(STAMP) test-deps lint
	$(BIN)/python -m pytest -q --durations=15

lock: $(STAMP)
	$(BIN)/pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --extra test --strip-extras --no-emit-index-url --no-emit-find-links \
		-o requirements.lock pyproject.toml

docs: $(STAMP)
	$(BIN)/python -m kiln.docs_gen

# The MNIST lab notebook, headless, against a kiln started on a scratch data dir (or $$KILN_URL);
# the executed copy with its plots: examples/lab.executed.ipynb. KILN_LAB_QUICK=1: a few minutes.
lab: $(STAMP)
	$(BIN)/python examples/run_lab.py

bench: $(STAMP)
	$(BIN)/python bench/bench_dataset.py
	$(BIN)/python bench/bench_train.py
	nice $(BIN)/python bench/bench_feed.py
	$(BIN)/python bench/bench_export.py

clean:
	rm -rf $(VENV) .pytest_cache
