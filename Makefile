# Quick start:  make demo   (install + train/evaluate on the built-in synthetic dataset)
#               make test   (install + run the test suite)
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo test clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev,onnx]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) tools/demo.py

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) output
