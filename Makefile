# remed: `make demo` runs the whole thing, `make test` checks it. Both start with `make setup`,
# which is idempotent: a second run installs and downloads nothing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
CACHE := .cache
# Stamps carry the hash of what they were built from, so an edit re-runs just that step.
VENV_STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
KAFKA_STAMP := $(CACHE)/kafka/.resolved-$(shell sha1sum remed_stack/kafka_runtime/pom.xml | cut -c1-12)
MODEL_STAMP := $(CACHE)/models/SmolLM2-135M-Instruct/.complete
PYTEST_ARGS ?=
# e.g. DEMO_ARGS="--planner triton --json"
DEMO_ARGS ?=
# ansible-playbook, remed and the other console scripts come from the venv.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup debian venv kafka model native test lint unit integration demo train stack-up stack-down clean

setup: debian $(VENV_STAMP) $(KAFKA_STAMP) $(MODEL_STAMP) native

debian:
	@scripts/setup-debian.sh

$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -m pip install -q -e ".[model,train,lab,dev]"
	@rm -f $(VENV)/.installed-* && touch $@

$(KAFKA_STAMP): remed_stack/kafka_runtime/pom.xml
	@rm -rf $(CACHE)/kafka/libs.new
	mvn -q -B -f remed_stack/kafka_runtime/pom.xml dependency:copy-dependencies \
	    -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(CACHE)/kafka/libs.new
	@rm -rf $(CACHE)/kafka/libs $(CACHE)/kafka/.resolved-* && mv $(CACHE)/kafka/libs.new $(CACHE)/kafka/libs
	@touch $@

$(MODEL_STAMP): | $(VENV_STAMP)
	$(PY) -m remed_stack.base_model

# remed_planner's AVX2 kernels, compiled in seconds into .cache/native/ under a name that carries
# the source's hash (a no-op when that build exists; the model also builds it when missing).
native: | $(VENV_STAMP)
	@$(PY) model_repo/remed_planner/native/build.py

lint: $(VENV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy remed_daemon remed_cli remed_stack chaos trainer

# The README's test command: lint, then unit and integration tests on the real stack
# (Kafka, Triton, lab hosts), which the session fixtures bring up and tear down.
test: setup lint
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

unit: $(VENV_STAMP)
	$(VENV)/bin/pytest -m unit $(PYTEST_ARGS)

# The shipped planner from the base model: data -> SFT -> evaluation -> gated promotion. Every
# step resumes or finds its output done, so a second `make train` continues where one stopped.
# The lab hosts and Triton must be up (`make stack-up`); see trainer/sft.py, trainer/promote.py.
TRAIN_DATA ?= sft-v2e
TRAIN_EVIDENCE ?= trainer/data/evidence/shop-v1.jsonl trainer/data/evidence/shop-v2-variants.jsonl
TRAIN_BUDGET ?= --train-per-turn oneshot=188,probed=90,probe-request=16,after-probes=12,replan=14 \
    --validation-limit 8
TRAIN_CONFIG ?= trainer/configs/sft-v2e.toml
TRAIN_RUN ?= runs/sft/sft-v2e
TRAIN_GATE_SUITE ?= all
train: setup
	test -f trainer/data/$(TRAIN_DATA)/manifest.json || \
	    $(VENV)/bin/remed train data build --name $(TRAIN_DATA) --evidence $(TRAIN_EVIDENCE) \
	    $(TRAIN_BUDGET)
	$(VENV)/bin/remed train data check trainer/data/$(TRAIN_DATA)
	$(VENV)/bin/remed train sft --config $(TRAIN_CONFIG)
	$(VENV)/bin/remed train promote $(TRAIN_RUN) --stage > $(TRAIN_RUN)/candidate-version
	$(VENV)/bin/remed train eval --version $$(cat $(TRAIN_RUN)/candidate-version) \
	    --dataset trainer/data/$(TRAIN_DATA) --suite $(TRAIN_GATE_SUITE) --out $(TRAIN_RUN)/eval/candidate
	$(VENV)/bin/remed train eval --suite $(TRAIN_GATE_SUITE) --out $(TRAIN_RUN)/eval/served
	$(VENV)/bin/remed train promote $(TRAIN_RUN) --suite oneshot/$(TRAIN_GATE_SUITE)

demo: setup
	$(PY) -m remed_stack.demo $(DEMO_ARGS)

stack-up: setup
	$(VENV)/bin/remed stack up

stack-down:
	$(VENV)/bin/remed stack down

clean: stack-down
	rm -rf .run
