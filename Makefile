# The two commands: `make demo` and `make test`. Each sets itself up from
# nothing on a Debian machine (virtualenv, pip packages, OS packages).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements-test.txt constraints.txt | md5sum | cut -c1-12)
# sslyze (the TLS scanner the broker tests use) pins an older `cryptography`
# than the harness, so it gets a virtualenv of its own.
SSLYZE_VERSION := 6.3.1
SSLYZE_VENV    := $(VENV)/tools/sslyze
SSLYZE_STAMP   := $(SSLYZE_VENV)/.installed-sslyze-$(SSLYZE_VERSION)
# A second environment with the harness beside Espressif's pytest-embedded, as an
# ESP-IDF team installs it: the test that both plugins load together runs there.
EMBEDDED_VERSION := 2.9.3
EMBEDDED_VENV    := $(VENV)/tools/embedded
EMBEDDED_STAMP   := $(EMBEDDED_VENV)/.installed-$(EMBEDDED_VERSION)-$(shell cat pyproject.toml constraints.txt | md5sum | cut -c1-12)
# MicroPython's WebAssembly port (npm), a 32-bit MicroPython run by node: the
# heap figures of `make bench` (sbd_harness/tools/heap32.py pins the same version).
MPWASM_VERSION := 1.27.0
MPWASM_DIR     := $(VENV)/tools/mpwasm
MPWASM_STAMP   := $(MPWASM_DIR)/.installed-mpwasm-$(MPWASM_VERSION)
HAVE_VENV := $(shell $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null && echo yes)
# What `sbd verify` needs on an emulated board; node and the headless browser are the test suite's.
VERIFY_APT_PACKAGES := $(if $(HAVE_VENV),,python3-venv) $(if $(shell command -v ip),,iproute2) \
                $(if $(shell command -v mosquitto),,mosquitto) \
                $(if $(or $(shell command -v chronyd),$(wildcard /usr/sbin/chronyd)),,chrony) \
                $(if $(or $(shell command -v ser2net),$(wildcard /usr/sbin/ser2net)),,ser2net)
APT_PACKAGES := $(VERIFY_APT_PACKAGES) \
                $(if $(shell command -v npm),,nodejs npm) \
                $(if $(shell command -v chromium-headless-shell),,chromium-headless-shell)
# `make setup-verify`: the harness alone (no test-only packages), for CI that only verifies a firmware.
VERIFY_STAMP := $(VENV)/.installed-verify-$(shell cat pyproject.toml constraints.txt | md5sum | cut -c1-12)

.PHONY: setup setup-verify system-deps system-deps-verify demo test test-fast test-soak bench bench-fleet clean

setup: system-deps $(STAMP) $(SSLYZE_STAMP) $(EMBEDDED_STAMP) $(MPWASM_STAMP)

# `make setup` installs all that `setup-verify` does and more: after it, setup-verify has nothing to add
# (and must not reinstall the harness into the environment the test suite runs in).
setup-verify: system-deps-verify $(if $(wildcard $(STAMP)),,$(VERIFY_STAMP)) $(SSLYZE_STAMP)

define apt_install
	@if [ -z "$(strip $(1))" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing OS packages: $(strip $(1))"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
	else \
		echo "missing OS packages: $(strip $(1)) (install them as root: apt-get install $(strip $(1)))"; \
	fi
endef

system-deps:
	$(call apt_install,$(APT_PACKAGES))

system-deps-verify:
	$(call apt_install,$(VERIFY_APT_PACKAGES))

$(VERIFY_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e . -c constraints.txt
	rm -f $(VENV)/.installed-verify-*
	touch $@

$(STAMP): pyproject.toml requirements-test.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[farm]' -r requirements-test.txt -c constraints.txt
	rm -f $(VENV)/.installed-*
	touch $@

$(SSLYZE_STAMP):
	$(PYTHON) -m venv $(SSLYZE_VENV)
	$(SSLYZE_VENV)/bin/pip install -q sslyze==$(SSLYZE_VERSION)
	rm -f $(SSLYZE_VENV)/.installed-*
	touch $@

$(EMBEDDED_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(EMBEDDED_VENV)
	$(EMBEDDED_VENV)/bin/pip install -q -e . pytest-embedded==$(EMBEDDED_VERSION) -c constraints.txt
	rm -f $(EMBEDDED_VENV)/.installed-*
	touch $@

$(MPWASM_STAMP):
	@command -v npm >/dev/null || { echo "npm (and node 18 or newer) is needed for the 32-bit heap figures: apt-get install nodejs npm"; exit 1; }
	mkdir -p $(MPWASM_DIR)
	npm install --prefix $(MPWASM_DIR) --no-audit --no-fund --save-exact --loglevel=error \
		@micropython/micropython-webassembly-pyscript@$(MPWASM_VERSION)
	rm -f $(MPWASM_DIR)/.installed-*
	touch $@

demo: setup
	$(BIN)/python -m sbd_harness.tools.demo

# The suite in tiers, as tests/ is laid out:
#   tests/unit      the host side alone (no board)
#   tests/firmware  the firmware's modules under MicroPython, ESP32-sized heap
#   tests/board     the emulated board, the serial-board code over its PTY, updates end to end
#   tests/checks    every check passing on the reference and failing on a firmware broken for it
#   tests/soak      the long fault series and sbd verify --soak on the reference (make test-soak)
# `make test` runs all but soak on four workers on two cores (most of a test's time is
# waiting on boards and brokers: two workers kept the cores 40 % busy, three about 70 %; on
# 2026-12-03 three took 532 s and four 483 s, 914 tests each), whole files per worker.
TEST_WORKERS ?= 4
# labgrid's pytest plugin (the farm extra) loads in every pytest process and slows the many the
# suite starts (about 1 s each); the project's tests run without it (PYTEST_ADDOPTS reaches their
# own pytest subprocesses too), but for tests/soak/test_labgrid_farm.py, whose suite runs beside it.
PYTEST := PYTEST_ADDOPTS="-p no:labgrid" $(BIN)/python -m pytest -p no:cacheprovider

test-fast: setup
	$(PYTEST) -q tests/unit tests/firmware

# The longest files first (each is one worker's unit of work), so no long one starts last.
TEST_ORDER := tests/checks/test_reference.py tests/checks/test_insecure_profile.py tests/checks/test_lab_pages.py \
              tests/firmware/mptest_ota_power_cuts.py tests/checks tests/board tests/firmware tests/unit

test: setup
	$(PYTEST) -n $(TEST_WORKERS) --dist loadfile $(TEST_ORDER)

test-soak: setup
	$(PYTEST) tests/soak

# The capacity figures run in their quick form (4 boards, 60 s); `make bench SBD_BENCH_CAPACITY=full`
# measures up to 128 boards, 5 minutes a level (about an hour, on a machine to itself).
SBD_BENCH_CAPACITY ?= quick
bench: setup
	$(BIN)/python -m sbd_harness.tools.bench --out bench/results.json --capacity $(SBD_BENCH_CAPACITY)

# fleet_verify_s_per_board alone, written into bench/results.json beside the other keys.
FLEET_BOARDS ?= 8
bench-fleet: setup
	$(BIN)/python -m sbd_harness.tools.bench_fleet --boards $(FLEET_BOARDS) --out bench/results.json

clean:
	-$(BIN)/sbd board list --json >/dev/null 2>&1 && for b in $$($(BIN)/python -c "import json,subprocess;print(' '.join(b['name'] for b in json.loads(subprocess.check_output(['$(BIN)/sbd','board','list','--json']))))"); do $(BIN)/sbd board rm $$b; done
	rm -rf $(VENV) .sbd reports build
