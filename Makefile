# Two commands do everything on a fresh machine: `make run` and `make test`.
# Each installs what it needs first (virtualenv, Python packages, and Debian's
# chromium and nginx when missing and running as root).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export STEPLOG_CHROMIUM ?= /usr/bin/chromium

# `make run PORT=8001` or `STEPLOG_PORT=8001 make run`.
PORT ?= $(or $(STEPLOG_PORT),8000)

.PHONY: install system-deps run test bench lint format clean screenshots

install: $(STAMP) system-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian's Chromium and nginx for the browser and proxy tests, nchan (nginx's pub/sub
# module) as the benchmark's peer, jq for the README's examples; never a browser download.
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	  [ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] || missing="$$missing libnginx-mod-nchan"; \
	  [ -x /usr/bin/jq ] || missing="$$missing jq"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing$$missing from Debian"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	fi

run: install
	@echo "the steplog command: source $(VENV)/bin/activate (or run $(BIN)/steplog)"
	$(BIN)/steplog serve --host 127.0.0.1 --port $(PORT) --db data/steplog.db --demo

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

# The stream view's screenshots in docs/, taken from the real pages in Chromium.
screenshots: install
	$(BIN)/python -m tests.e2e.screenshots --out docs

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy functions storage stream

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) data .pytest_cache
