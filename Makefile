# pacs-triage: `make run` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export TCP_NODELAY := 1
# The cached environment is shared by clones; this clone's packages come first.
export PYTHONPATH := $(CURDIR)

.PHONY: install system run test lint realdata bench demo-bundle lock clean

install:
	@.ci/ensure-env.sh

system:
	@.ci/ensure-system.sh

run: install system
	$(BIN)/triage db upgrade
	$(BIN)/triage serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The listener's suite runs twice: on the streaming receive path, then on pynetdicom's own.
test: install system lint
	$(BIN)/python -m pytest -q -p no:cacheprovider
	TRIAGE_DICOM_FAST_PATH=false $(BIN)/python -m pytest -q -p no:cacheprovider tests/listener

realdata: install system
	$(BIN)/python -m bench.realdata ../shared/data
	$(BIN)/python -m bench.realdata_inference ../shared/data
	$(BIN)/python -m bench.completion ../shared/data
	$(BIN)/python -m bench.realdata_pictures ../shared/data

bench: install system
	$(BIN)/python -m bench.ingest

demo-bundle: install
	$(BIN)/training demo
	$(BIN)/training input-domain worker/bundles/demo

# Regenerate requirements.lock from pyproject.toml's direct needs (run by hand, commit the result).
lock:
	rm -rf /tmp/pacs-triage-lock && python3 -m venv /tmp/pacs-triage-lock
	/tmp/pacs-triage-lock/bin/pip install -q torch==2.14.1 torchvision==0.29.2 -e .[dev]
	/tmp/pacs-triage-lock/bin/pip freeze --exclude-editable | grep -v '^pacs-triage' > requirements.lock

clean:
	rm -rf var .pytest_cache
