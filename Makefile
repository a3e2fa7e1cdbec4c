# The two README commands: `make demo` and `make test`. Both create/reuse .venv and install
# the pinned stack (requirements.lock) plus this package in editable mode.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: install test test-slow test-all lint demo bench clean-demo

install: $(STAMP)

$(STAMP): requirements.lock setup.cfg pyproject.toml $(wildcard sdl_tf/cc/*)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	@# The compiled loss kernel (sdl_tf.native_ops); without a C++ compiler the loss uses its
	@# slower XLA kernel.
	$(BIN)/python -m sdl_tf.native_ops || echo "warning: SDL loss kernel not built (see above)"
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	DEMO_OUT=$(DEMO_OUT) PYTHON=$(BIN)/python bash scripts/demo.sh

clean-demo:
	rm -rf $(DEMO_OUT)
