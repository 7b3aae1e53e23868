# Quick start: `make demo` and `make test`. Each does all set-up itself, idempotently.
SHELL := /bin/bash
VENV := .venv
export AMARANTH_USE_YOSYS := builtin

.PHONY: setup demo test lint clean

setup:
	@bash tools/setup.sh

demo: setup
	$(VENV)/bin/lutra demo

test: setup
	PYTHONWARNINGS=error $(VENV)/bin/python -m pytest -n auto -q -p no:cacheprovider tests

clean:
	rm -rf build sim_build
