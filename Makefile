# wsfw developer entry points. Two commands matter (README): `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_LISTEN ?= tcp:8081:interface=127.0.0.1
CONFIG ?= etc/wsfw.ini

.PHONY: run test check-config bench clean

# The venv is rebuilt when the pins change. `editable_mode=compat` keeps
# twisted/plugins on sys.path, so `twistd wsfw` finds the plugin (the default
# PEP 660 editable install hides it from twistd's plugin scan).
$(BIN)/.installed: requirements.txt requirements-test.txt setup.cfg
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-test.txt
	$(BIN)/pip install --quiet --no-deps -e . --config-settings editable_mode=compat
	touch $@

# wsfw on :8080 in front of the bundled demo upstream on :8081; Ctrl-C stops both.
run: $(BIN)/.installed
	@$(BIN)/python -m wsfw.demo --listen $(DEMO_LISTEN) & demo=$$!; \
	trap 'kill $$demo 2>/dev/null' EXIT INT TERM; \
	echo "wsfw: open http://127.0.0.1:8080/ (demo upstream pid $$demo)"; \
	$(BIN)/twistd --nodaemon --pidfile= wsfw --config $(CONFIG)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q tests

check-config: $(BIN)/.installed
	$(BIN)/wsfw check-config $(CONFIG)

# Benchmarks: throughput, CPU per round trip, RSS per idle connection (bench/README.md).
bench: $(BIN)/.installed
	$(BIN)/python bench/relay_bench.py

clean:
	rm -rf $(VENV) build *.egg-info twisted/plugins/dropin.cache
