# The two Quickstart commands: `make demo` and `make test`. Both set everything up first.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test bench clean-runs

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/python scripts/demo.py $(ARGS)

test: setup
	$(BIN)/python -m pytest $(ARGS)

clean-runs:
	rm -rf runs
