# tre — the README's two commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
export DATABASE_URL_TEST ?= postgres://postgres@127.0.0.1:5432/tre
export CELERY_BROKER_URL_TEST ?= redis://127.0.0.1:6379/15

.PHONY: run test venv install install-dev migrate services-check clean demo

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt $(VENV)/bin/activate
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## make run: the embedded default (SQLite, in-process tasks, store in var/); no servers needed.
run: install
	env -u DATABASE_URL -u CELERY_BROKER_URL $(PY) manage.py migrate --noinput -v0
	env -u DATABASE_URL -u CELERY_BROKER_URL $(PY) manage.py tre_demo_seed
	@echo "tre is starting at http://$(HOST):$(PORT)/  (API docs: /api/docs/, health: /healthz). Ctrl-C stops it."
	env -u DATABASE_URL -u CELERY_BROKER_URL $(PY) manage.py runserver --noreload $(HOST):$(PORT)

## make test: installs what the tests need and runs the whole suite on PostgreSQL and Redis.
test: install-dev
	@DATABASE_URL="$${DATABASE_URL:-$$DATABASE_URL_TEST}" CELERY_BROKER_URL="$${CELERY_BROKER_URL:-$$CELERY_BROKER_URL_TEST}" \
	  $(PY) scripts/check_services.py
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	DATABASE_URL="$${DATABASE_URL:-$$DATABASE_URL_TEST}" TRE_ENV=test $(VENV)/bin/mypy
	DATABASE_URL="$${DATABASE_URL:-$$DATABASE_URL_TEST}" CELERY_BROKER_URL="$${CELERY_BROKER_URL:-$$CELERY_BROKER_URL_TEST}" \
	  TRE_ENV=test $(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var

## make demo: a scripted walk through the whole lifecycle against the server `make run` started.
demo: install
	$(PY) -m demo.walkthrough --base-url http://$(HOST):$(PORT)
