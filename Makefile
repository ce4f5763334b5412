# Quick start targets. Each installs what it needs into ./.venv first.
PY ?= python3
VENV ?= .venv
VPY = $(VENV)/bin/python
# torch/torchvision come from the local wheel cache on the dev machines; elsewhere pip
# resolves the same range from PyPI.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test

$(VENV)/.installed: setup.py
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH_SPEC) || $(VPY) -m pip install -q "torch>=2.0" "torchvision>=0.15"
	$(VPY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VPY) tools/train_net.py --config-file configs/nuclei_quickstart.yaml OUTPUT_DIR output/quickstart

test: install
	$(VPY) -m pytest -q -x tests
