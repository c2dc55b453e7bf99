# `make test` runs ruff and the whole test suite; `make demo` enhances the
# MiniVB test split with the bundled two-stage model and writes results/demo/
# (`make demo TASK=dereverb`: the MiniWHAMR test split with the bundled
# dereverberation model, into results/demo-dereverb/);
# `make demo-train DEMO_EPOCHS=E DEMO_TRAIN_MINUTES=M` trains both stages from
# scratch first (tools/demo_train.py).
# Targets create the virtual environment on first use and reuse it afterwards.

PYTHON ?= python3.11
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint venv demo demo-train

venv: $(STAMP)

# Reinstall only when the package definition or the pinned versions change.
# setup.py states the supported ranges; constraints.txt the exact versions
# that `make test` and `make demo` use.
$(STAMP): setup.py constraints.txt
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[dev]' -c constraints.txt
	@touch $(STAMP)

lint: $(STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m ruff format --check .

# The report.html test drives Debian's Chromium; the script installs it when
# absent (and says why not where it cannot, then that test is skipped).
test: lint
	@tools/install_browser.sh
	$(VPY) -m pytest

TASK ?= denoise
DEMO_MODEL ?=
DEMO_DATA ?=
DEMO_OUT ?=
DEMO_ITEMS ?= 24
DEMO_THREADS ?=
DEMO_EPOCHS ?= 60
DEMO_TRAIN_MINUTES ?= 3

demo: $(STAMP)
	$(VPY) -m speechbrain_elbo.demo --task $(TASK) \
		--items $(DEMO_ITEMS) $(if $(DEMO_THREADS),--threads $(DEMO_THREADS)) \
		$(if $(DEMO_DATA),--data $(DEMO_DATA)) \
		$(if $(DEMO_OUT),--out $(DEMO_OUT)) \
		$(if $(DEMO_MODEL),--model $(DEMO_MODEL))

demo-train: $(STAMP)
	$(if $(DEMO_MINUTES),$(error DEMO_MINUTES is gone: give DEMO_EPOCHS and \
		DEMO_TRAIN_MINUTES (minutes of training speech), see docs/demo.md))
	$(VPY) tools/demo_train.py --epochs $(DEMO_EPOCHS) \
		--train-minutes $(DEMO_TRAIN_MINUTES) --threads $(DEMO_THREADS) \
		--out results/demo-train/report
