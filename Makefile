# HydroNet Cloud. `make run` starts the app, `make test` runs the tests.
# Both create .venv with Python 3.12+ and install the pinned requirements first.

SHELL := /bin/bash
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MO_STAMP := locale/.compiled

# Python 3.12 or newer: pyenv's `.python-version` makes python3.12 resolve here.
PYTHON ?= $(shell for p in python3.12 python3.13 python3.14 python3; do \
	  if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
	    echo $$p; break; fi; done)

.PHONY: run test setup check lint format typecheck makemessages vendor-js bench bench-provisioning bench-chat bench-chat-cpu bench-metering manage clean-devdata help

help:
	@echo "make run        start HydroNet Cloud with a demo tenant (embedded PostgreSQL and Redis unless set)"
	@echo "make test       run the test suite against real PostgreSQL and Redis"
	@echo "make check      ruff (lint and format) and mypy"
	@echo "make manage ARGS=\"list_tenants\"   a manage.py command against make run's database and Redis"
	@echo "make bench      run the benchmarks in bench/"
	@echo "make makemessages   refresh the translation catalogues in locale/"
	@echo "make vendor-js  fetch the vendored Chart.js again from npm, at the pinned version"

run: setup
	@$(VPY) -m deploy.devstack run

test: setup
	@$(VPY) -m deploy.devstack test $(PYTEST_ARGS)

manage: setup
	@$(VPY) -m deploy.devstack manage $(ARGS)

setup: $(STAMP) $(MO_STAMP)

$(VPY):
	@if [ -z "$(PYTHON)" ]; then echo "error: HydroNet needs Python 3.12 or newer (python3.12 was not found on PATH)"; exit 1; fi
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt requirements-dev.txt | $(VPY)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

$(MO_STAMP): $(STAMP) $(wildcard locale/*/LC_MESSAGES/django.po)
	@command -v msgfmt >/dev/null || { echo "error: msgfmt (GNU gettext) is needed to compile translations: apt-get install gettext"; exit 1; }
	DJANGO_SETTINGS_MODULE=config.settings.dev DATABASE_URL=postgres://unused/unused REDIS_URL=redis://unused \
	  $(VPY) manage.py compilemessages --ignore=.venv --verbosity 0
	@touch $(MO_STAMP)

makemessages: setup
	DJANGO_SETTINGS_MODULE=config.settings.dev DATABASE_URL=postgres://unused/unused REDIS_URL=redis://unused \
	  $(VPY) manage.py makemessages -l zh_Hans -l en --ignore=.venv --ignore=.devdata --no-obsolete

check: lint typecheck

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: setup
	DATABASE_URL=postgres://unused/unused REDIS_URL=redis://unused $(VENV)/bin/mypy

# Chart.js, vendored under static/vendor/chartjs/ (MIT): the usage page's charts. The file is
# the package's dist/chart.umd.js minus its sourceMappingURL line (the map is not shipped, and
# collectstatic's manifest storage refuses a reference to a missing file). To upgrade, change
# both lines: CHARTJS_INTEGRITY is `npm view chart.js@<version> dist.integrity`.
CHARTJS_VERSION := 4.6.1
CHARTJS_INTEGRITY := sha512-hJyniucsFmq//EvXYvJ6c6mahPoI3kaxdjVH8awTaJ/fDNWeSqqqArixMJWkWNN6fcYvPU3HneSANFNYtRi61g==
CHARTJS_DIR := static/vendor/chartjs

vendor-js:
	@command -v npm >/dev/null || { echo "error: vendor-js needs npm (Node.js)"; exit 1; }
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  tgz="$$tmp/chart.js-$(CHARTJS_VERSION).tgz" && \
	  (cd "$$tmp" && npm pack --silent chart.js@$(CHARTJS_VERSION) >/dev/null) && \
	  got="sha512-$$(openssl dgst -sha512 -binary "$$tgz" | base64 -w0)" && \
	  if [ "$$got" != "$(CHARTJS_INTEGRITY)" ]; then echo "error: chart.js-$(CHARTJS_VERSION).tgz is $$got"; exit 1; fi && \
	  tar -xzf "$$tgz" -C "$$tmp" package/dist/chart.umd.js package/LICENSE.md && \
	  mkdir -p $(CHARTJS_DIR) && \
	  sed '/^\/\/# sourceMappingURL=/d' "$$tmp/package/dist/chart.umd.js" > $(CHARTJS_DIR)/chart.umd.js && \
	  cp "$$tmp/package/LICENSE.md" $(CHARTJS_DIR)/LICENSE.md && \
	  echo "$(CHARTJS_DIR): Chart.js $(CHARTJS_VERSION)"

bench: bench-provisioning bench-chat bench-metering

bench-provisioning: setup
	$(VPY) -m deploy.devstack exec -- $(VPY) bench/provisioning.py $(BENCH_ARGS)

bench-chat: setup
	$(VPY) -m deploy.devstack exec -- $(VPY) bench/chat_ttft.py $(BENCH_ARGS)

bench-chat-cpu: setup
	$(VPY) -m deploy.devstack exec -- $(VPY) bench/chat_cpu.py $(BENCH_ARGS)

bench-metering: setup
	$(VPY) -m deploy.devstack exec -- $(VPY) bench/metering.py $(BENCH_ARGS)

clean-devdata:
	rm -rf .devdata
