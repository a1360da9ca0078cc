# Two entry points for a fresh machine (each creates .venv, installs torch and the package):
#   make demo   trains the tutorial's two-layer network on the extension (the main job)
#   make test   runs the test suite
# The CUDA kernels are compiled whenever a CUDA toolkit is found (CUDA_HOME, default
# /usr/local/cuda), with or without a GPU.

VENV      ?= .venv
PY        := $(abspath $(VENV))/bin/python
CUDA_HOME ?= $(shell [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda)
export CUDA_HOME
# With a toolkit, require the CUDA build (a CUDA compile error must fail `make test`).
ifneq ($(CUDA_HOME),)
export TWOLAYER_EXT_CUDA ?= 1
export TWOLAYER_EXT_EXPECT_CUDA ?= 1
endif

.PHONY: demo test install bench lint typecheck clean

$(VENV)/.deps-installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch ninja setuptools wheel numpy pytest hypothesis matplotlib tqdm \
		onnx onnxscript onnxruntime
	touch $@

# --no-build-isolation: compile against the torch installed above (see README).
install: $(VENV)/.deps-installed
	$(PY) -m pip install -q --no-build-isolation --no-deps .
	cd /tmp && $(PY) -c "import twolayer_ext, json; print(json.dumps(twolayer_ext.build_info()))"

demo: install
	cd /tmp && $(PY) -m twolayer_ext train --scheme all --compare --plot $(CURDIR)/loss_curves.png

test: install
	$(abspath $(VENV))/bin/pytest -q tests

bench: install
	cd /tmp && $(PY) -m twolayer_ext bench

lint: $(VENV)/.deps-installed
	$(PY) -m pip install -q ruff && $(abspath $(VENV))/bin/ruff check twolayer_ext tests scripts build_backend setup.py

# mypy pinned: a newer release may find new things; bump it on purpose.
typecheck: $(VENV)/.deps-installed
	$(PY) -m pip install -q mypy==2.4.1 && $(abspath $(VENV))/bin/mypy --strict twolayer_ext

clean:
	rm -rf build $(VENV) *.egg-info twolayer_ext/_build_config.py
