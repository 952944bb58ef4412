# strainwatch: `make demo` runs the whole pipeline locally, `make test` the tests (`make faults` the long
# fault scenarios).
# Both set up what they need on a fresh Debian machine (venv, pip, apt, Maven jars).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps jars lint unit integration test faults demo bench stack-down clean

# Exactly the tested versions (requirements-dev.lock includes requirements.lock), then the package
# without resolving again: the processor relies on faust internals, so nothing may float.
$(STAMP): pyproject.toml requirements.lock requirements-dev.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP) system-deps

# InfluxDB for the local stack: Debian's `influxdb` package (1.6.7, which predates /api/v2/write, so the
# stack puts its route adapter in front); the stack also installs it when run as root.
system-deps:
	@command -v influxd >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq influxdb >/dev/null; \
	  else echo "influxd missing: run 'sudo apt-get install influxdb' or set STRAINWATCH_INFLUX_URL" >&2; exit 1; fi; }

# Apache Kafka jars from Maven Central, for `--broker kafka` and the tests that need a durable broker.
jars: $(STAMP)
	$(BIN)/strainwatch stack jars

lint: $(STAMP)
	$(BIN)/ruff check services tests bench
	$(BIN)/ruff format --check services tests bench
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -m unit -q

integration: setup jars
	$(BIN)/pytest -m "integration and not faults"

# every test but the long scale-out and repeated-kill scenarios, which `make faults` runs
test: setup jars lint
	$(BIN)/pytest -m "not faults"

# several processor instances joining, leaving and killed mid-rebalance on Apache Kafka (about 12 min)
faults: setup jars
	$(BIN)/pytest -m faults

demo: setup
	$(BIN)/strainwatch demo

bench: setup jars
	$(BIN)/python bench/processor_throughput.py

stack-down: $(STAMP)
	$(BIN)/strainwatch stack down

clean: stack-down
	rm -rf $(VENV) .strainwatch
