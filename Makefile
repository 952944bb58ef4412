# strainwatch: `make demo` runs the whole pipeline locally, `make test` the tests (`make faults` the long
# fault scenarios).
# Both set up what they need on a fresh Debian machine (venv, pip, apt, Maven jars).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NATIVE := services/strainwatch/exposure/engine.native-stamp

.PHONY: setup native system-deps jars lint unit integration test faults fuzz soak demo bench stack-down clean

# Exactly the tested versions (requirements-dev.lock includes requirements.lock), then the package
# without resolving again: the processor relies on faust internals, so nothing may float.
$(STAMP): pyproject.toml requirements.lock requirements-dev.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP) system-deps $(NATIVE)

# The exposure engine compiled with mypyc (services/strainwatch/native.py; docs/processor.md): about
# twice the engine's speed. Without it the engine runs as Python; a build older than its sources is
# never used. `make test` checks the two score alike.
native: $(NATIVE)
$(NATIVE): $(STAMP) services/strainwatch/exposure/engine.py services/strainwatch/exposure/thresholds.py
	@command -v gcc >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc >/dev/null; } || { echo "gcc missing: run 'sudo apt-get install gcc'" >&2; exit 1; }
	$(BIN)/python -c "from strainwatch.native import build; build()"

# InfluxDB and Mosquitto for the local stack: Debian's `influxdb` (1.6.7, which predates /api/v2/write,
# so the stack puts its route adapter in front) and `mosquitto` (2.0.11) packages; the stack also
# installs them when run as root. The monthly report's PDF needs Pango (WeasyPrint) and a font; its
# tests render pages with poppler's pdftoppm.
system-deps:
	@missing=""; command -v influxd >/dev/null || missing="influxdb"; \
	  { command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto; } || missing="$$missing mosquitto"; \
	  command -v pdftoppm >/dev/null || missing="$$missing poppler-utils"; \
	  ldconfig -p | grep -q 'libpango-1.0.so' || missing="$$missing libpango-1.0-0"; \
	  ldconfig -p | grep -q 'libpangoft2-1.0.so' || missing="$$missing libpangoft2-1.0-0"; \
	  fc-list 2>/dev/null | grep -qi dejavu || missing="$$missing fonts-dejavu-core"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    else echo "missing:$$missing: run 'sudo apt-get install$$missing' (or set STRAINWATCH_INFLUX_URL / STRAINWATCH_MQTT_HOST)" >&2; exit 1; fi; \
	  fi

# Apache Kafka jars from Maven Central, for `--broker kafka` and the tests that need a durable broker.
jars: $(STAMP)
	$(BIN)/strainwatch stack jars

lint: $(STAMP)
	$(BIN)/ruff check services tests bench
	$(BIN)/ruff format --check services tests bench
	$(BIN)/mypy

unit: $(STAMP) $(NATIVE)
	$(BIN)/pytest -m unit -q

integration: setup jars
	$(BIN)/pytest -m "integration and not faults"

# every test but the long scale-out and repeated-kill scenarios, which `make faults` runs
test: setup jars lint
	$(BIN)/pytest -m "not faults"

# several processor instances joining, leaving and killed mid-rebalance on Apache Kafka (about 6 min)
faults: setup jars
	$(BIN)/pytest -m faults

# the atheris fuzz target of the frame decoder and validator, for a fixed budget (docs/operations.md)
fuzz: $(STAMP)
	$(BIN)/python tests/fuzz/fuzz_frames.py -max_total_time=60 -rss_limit_mb=1024

# 10 minutes of 2,000 workers x 10 Hz with a processor kill and a broker restart (docs/operations.md)
soak: setup jars
	$(BIN)/python bench/soak.py

demo: setup
	$(BIN)/strainwatch demo

bench: setup jars
	$(BIN)/python bench/processor_throughput.py
	$(BIN)/python bench/report_scale.py

stack-down: $(STAMP)
	$(BIN)/strainwatch stack down

clean: stack-down
	rm -rf $(VENV) .strainwatch services/build $(NATIVE) services/strainwatch/exposure/engine*.so
