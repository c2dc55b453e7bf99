# `make test` runs ruff and the whole test suite; `make demo` arrives with the
# bundled demo model.
# Targets create the virtual environment on first use and reuse it afterwards.

PYTHON ?= python3.11
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint venv

venv: $(STAMP)

# Reinstall only when the package definition changes.
$(STAMP): setup.py
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

lint: $(STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m ruff format --check .

test: lint
	$(VPY) -m pytest
