# Two entry points (see README "Quick start"):
#   make demo   -- create .venv if missing, then run the whole weak pipeline on the embedded demo
#   make test   -- create .venv if missing, then run the test suite
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench clean-runs

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	$(PY) -m pip install -q --disable-pip-version-check --no-deps "cityscapesscripts==2.3.0"
	$(PY) -c "import torch, torchvision, ray, pydensecrf.densecrf, skimage, yaml"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/coarse2fine run --config configs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q

clean-runs:
	rm -rf runs
