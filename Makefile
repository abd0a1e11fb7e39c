# hm-recs: two commands set everything up on a fresh machine.
#   make demo   install, generate the synthetic data set if absent, run the newest weeks end to end
#   make test   install, run the test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
export HM_HOME ?= $(CURDIR)/.hm_home
export HM_DATA_DIR ?= $(CURDIR)/data/synthetic-small
export DAGSTER_HOME ?= $(HM_HOME)/dagster
DEMO_PRESET ?= small
DEMO_SEED ?= 0
UI_PORT ?= 3000
SERVE_PORT ?= 8000
# Links in the UI's metadata (galleries, submissions) point at `hm-recs serve` here.
export HM_SERVE_URL ?= http://127.0.0.1:$(SERVE_PORT)

.PHONY: install data demo backtest test test-postgres test-celery test-deploy ui clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

$(HM_DATA_DIR)/transactions_train.csv: | $(VENV)/.installed
	$(BIN)/hm-synth $(HM_DATA_DIR) --preset $(DEMO_PRESET) --seed $(DEMO_SEED)

data: $(HM_DATA_DIR)/transactions_train.csv

$(DAGSTER_HOME)/dagster.yaml: deploy/local/dagster.yaml
	mkdir -p $(DAGSTER_HOME) && cp deploy/local/dagster.yaml $@

demo: install data $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/hm-recs run --data-dir $(HM_DATA_DIR) --backtest-weeks 2 --submission $(HM_HOME)/submission.csv
	@echo
	@echo "Open the Dagster UI with:  make ui   (then http://127.0.0.1:$(UI_PORT))"

backtest: install data $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/hm-recs run --data-dir $(HM_DATA_DIR) --backtest-weeks 5

# The same tests as CI, the browser test included: scripts/system-packages installs Chromium,
# ChromeDriver, PostgreSQL and Redis when missing (as root; otherwise it says what to install), and
# the tests that need them fail instead of skipping (HM_REQUIRE_BROWSER, HM_REQUIRE_SERVERS).
test: install
	scripts/system-packages
	HM_REQUIRE_BROWSER=1 HM_REQUIRE_SERVERS=1 $(BIN)/pytest

# The production storage on a local PostgreSQL server (Debian's postgresql package; skips without it).
test-postgres: install
	$(BIN)/pytest hm_assets_tests/integration/test_postgres_instance.py

# A week on two Celery workers (Redis broker, PostgreSQL storage, a local S3), one of them killed
# mid-shard in the second run (Debian's redis-server and postgresql; skips without them).
test-celery: install
	$(BIN)/pytest hm_assets_tests/integration/test_celery.py

# deploy/*.yaml against Dagster's schemas (the class checks need: pip install -e '.[deploy]').
test-deploy: install
	$(BIN)/pytest hm_assets_tests/unit/test_deploy_config.py

# The UI and, beside it, the http service its gallery and submission links open in (stopped with it).
# `dagster dev` warns that `dg dev` supersedes it; this project is not a `dg` project, so that one
# notice is silenced by its text.
ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/hm-recs serve --host 127.0.0.1 --port $(SERVE_PORT) & serve=$$!; \
	trap 'kill $$serve 2>/dev/null' EXIT INT TERM; \
	PYTHONWARNINGS='ignore:Function `dev_command` is superseded' \
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(UI_PORT)

clean:
	rm -rf $(HM_HOME)
