# Quick start:  make demo   (install + train/evaluate on the built-in synthetic dataset)
#               make test   (install + run the test suite)
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
DEMO_EXTRAS := plots,tensorboard
TEST_EXTRAS := dev,onnx,plots,faiss

.PHONY: install demo test clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# pip prints what it collects and its download bars (no --quiet: the first install takes minutes)
$(VENV)/.installed-demo: setup.py | $(VENV)/bin/python
	@echo ">>> Installing clipreid_plugin into $(VENV)/ with torch, torchvision, open_clip, matplotlib and" \
	      "TensorBoard (the [$(DEMO_EXTRAS)] extras). First time only: about 3-4 minutes, mostly downloading torch."
	$(PY) -m pip install --progress-bar on -e ".[$(DEMO_EXTRAS)]"
	touch $@

$(VENV)/.installed-test: setup.py | $(VENV)/bin/python
	@echo ">>> Installing clipreid_plugin into $(VENV)/ with torch, torchvision, open_clip and the" \
	      "[$(TEST_EXTRAS)] extras (pytest, onnx, onnxruntime, matplotlib, faiss-cpu)." \
	      "First time only: about 3-5 minutes, mostly downloading torch."
	$(PY) -m pip install --progress-bar on -e ".[$(TEST_EXTRAS)]"
	touch $@

install: $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(PY) tools/demo.py

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) output
