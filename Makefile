# wsfw developer entry points. Two commands matter (README): `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_LISTEN ?= tcp:8081:interface=127.0.0.1
CONFIG ?= etc/wsfw.ini

.PHONY: run test check-config bench clean test-deps deb deb-deps test-deb screenshot

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

test: $(BIN)/.installed test-deps
	$(BIN)/python -m pytest -q tests

# Programs the integration tests run for real, from Debian (nothing else is
# downloaded): chromium + chromedriver (the dashboard and chat browser tests),
# redis-server and haproxy (two wsfw nodes behind a balancer sharing state).
# As root on Debian (CI, a fresh VM) they are installed here; anywhere else
# the tests needing them are skipped and say why.
TEST_PROGRAMS := /usr/bin/chromium /usr/bin/chromedriver /usr/bin/redis-server /usr/sbin/haproxy
TEST_PACKAGES := chromium chromium-driver redis-server haproxy
test-deps:
	@missing=$$(for f in $(TEST_PROGRAMS); do [ -x $$f ] || echo $$f; done); \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "make: installing $(TEST_PACKAGES) (apt) for the integration tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		{ apt-get install -y -q $(TEST_PACKAGES) >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null && apt-get install -y -q $(TEST_PACKAGES) >/dev/null; }; } || \
		echo "make: WARNING: installing $(TEST_PACKAGES) failed: tests needing them will be skipped"; \
	else \
		echo "make: note: missing $$missing; tests needing them will be skipped" \
		     "(as root: apt-get install $(TEST_PACKAGES))"; \
	fi

# Debian package (dh-virtualenv), built from a copy of the work tree into dist/.
DEB_BUILD ?= build/deb
DEB_DEPS := dh-virtualenv debhelper devscripts lintian build-essential python3-dev python3-venv curl

deb-deps:
	@missing=$$(for p in $(DEB_DEPS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing || \
			{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; }; \
		else echo "make: missing build dependencies: $$missing (apt-get install them as root)"; exit 1; fi; \
	fi

deb: deb-deps
	rm -rf $(DEB_BUILD) && mkdir -p $(DEB_BUILD)/wsfw dist
	git ls-files -co --exclude-standard | while read -r f; do [ -e "$$f" ] && echo "$$f"; done \
		| tar -cf - -T - | tar -C $(DEB_BUILD)/wsfw -xf -
	cd $(DEB_BUILD)/wsfw && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b
	cp $(DEB_BUILD)/*.deb dist/
	@ls -l dist/*.deb

# Build, install, run the installed daemon, upgrade, purge (packaging/test-deb.sh). Root; minutes.
test-deb: deb-deps
	packaging/test-deb.sh

# docs/dashboard.png for the README: the dashboard with 90 s of generated traffic.
screenshot: $(BIN)/.installed browser
	$(BIN)/python packaging/screenshot.py --seconds 90 --out docs/dashboard.png

check-config: $(BIN)/.installed
	$(BIN)/wsfw check-config $(CONFIG)

# Benchmarks (bench/README.md): direct, bare relay and wsfw off/detect/block in one run:
# CPU per round trip at 64 B/1 KiB/16 KiB, latency at 1k and 5k msg/s, RSS per idle
# connection (9,900), handshakes/s. About 15 minutes; --quick about 3.
bench: $(BIN)/.installed
	$(BIN)/python bench/relay_bench.py

clean:
	rm -rf $(VENV) build dist *.egg-info twisted/plugins/dropin.cache
