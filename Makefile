# MorphoMass: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= var/demo-survey
DEMO_N ?= 2000
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: demo test lint venv serve clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Full suite on whatever DATABASE_URL says (PostgreSQL in CI), in $(TEST_WORKERS) processes
# (pytest-xdist; a module's tests stay in one, the longest groups first: tests/conftest.py says
# why), then the smoke part on the embedded SQLite default.
TEST_WORKERS ?= 3
test: $(STAMP) lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder --durations=20
	env -u DATABASE_URL $(PY) -m pytest -m smoke -p no:cacheprovider -q

demo: $(STAMP)
	@$(PY) manage.py migrate --noinput -v 0 && echo "database ready (migrations applied)"
	$(PY) manage.py demo_data --out $(DEMO_DIR) --n $(DEMO_N) --url http://$(HOST):$(PORT)/
	@echo "MorphoMass demo: http://$(HOST):$(PORT)/"
	$(PY) manage.py runserver --noreload $(HOST):$(PORT)

clean:
	rm -rf var/media var/morphomass.sqlite3 $(DEMO_DIR)
