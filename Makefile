# Two commands on a bare machine with Python 3.11+: `make demo` and `make test`.
# Everything else (virtualenv, packages, local PostgreSQL/Redis/SeaweedFS) is set up on the way.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
MANAGE := $(BIN)/python manage.py
PYTEST_ARGS ?=

.PHONY: install services services-stop services-status migrate demo test lint typecheck pytest lock bench load clean chromium

# Older Hugging Face clients, each in a folder of its own, for the compatibility tests: users run
# the 0.x and 1.x lines as well as the 2.x the virtualenv has.
HF_CLIENTS := 0.36.2 1.21.0

$(INSTALLED): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[local,dev]'
	touch $@

HF_CLIENTS_INSTALLED := $(VENV)/hf-clients/.installed
$(HF_CLIENTS_INSTALLED): $(INSTALLED) Makefile
	for version in $(HF_CLIENTS); do \
	  $(BIN)/python -m pip install --quiet --upgrade --target $(VENV)/hf-clients/$$version \
	    "huggingface_hub==$$version" || exit 1; \
	done
	touch $@

install: $(INSTALLED)

services: install
	$(BIN)/python -m infra.local start

services-stop:
	$(BIN)/python -m infra.local stop

services-status:
	$(BIN)/python -m infra.local status

migrate: services
	$(MANAGE) migrate --noinput
	$(MANAGE) storage_init

demo: migrate
	$(MANAGE) collectstatic --noinput --verbosity 0
	$(MANAGE) seed_demo
	@# The demo serves plain HTTP on loopback, so its cookies cannot require HTTPS; its logs are
	@# read by people, not a log pipeline.
	SECURE_COOKIES=0 LOG_FORMAT=plain PATH="$(CURDIR)/$(BIN):$$PATH" \
		$(BIN)/honcho --procfile infra/Procfile.demo --app-root . start

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: services  # the django-stubs plugin loads settings, which read .local/env
	$(BIN)/mypy config release licensing infra bench tests weightgate_cli

# The portal's browser tests drive Debian's Chromium through Playwright (never a browser build
# downloaded by Playwright). Installed when missing; if that fails (no root, no network), the
# browser tests are skipped and say why.
CHROMIUM := /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { \
	  apt-get update || true; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium \
	    || echo "chromium could not be installed: the browser tests will be skipped"; \
	}

pytest: services $(HF_CLIENTS_INSTALLED) chromium
	$(MANAGE) storage_init
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# Re-pin every dependency after changing pyproject.toml: the pins are what CI and new users get.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet '.[local,dev]'
	.lock-venv/bin/python -m pip freeze --exclude weightgate > constraints.txt
	rm -rf .lock-venv build

bench: migrate
	$(BIN)/python bench/catalog_api.py

# Launch day under load (bench/launch.py, about 2 minutes; not part of `make test`): token
# holders downloading, new users requesting access and an unlock flipping mid-load, on a
# throwaway database with its own gunicorn and Celery worker. Fails if anyone got the unlocking
# artifact before the flip committed, or on any error. `make load LOAD_ARGS=--quick`: 15 s.
LOAD_ARGS ?=
load: migrate
	$(BIN)/python bench/launch.py $(LOAD_ARGS)

clean: services-stop
	rm -rf $(VENV) .local
