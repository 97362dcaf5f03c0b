# The README's two commands: `make demo` (serve the bundled model) and `make test` (the whole suite).
# Both create .venv and install what they need on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
ARTIFACT ?= models/pneumo-resnet18-kermany
# torch pairs that install on this project's machines; override for a GPU build, e.g.
#   make demo TORCH="torch torchvision" PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cu124"
TORCH ?= torch==2.14.1 torchvision==0.29.1
PIP_ARGS ?=

export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1

.PHONY: demo test install-serve install-dev benchmarks clean

$(PY):
	python3 -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	$(PY) -m pip install $(PIP_ARGS) $(TORCH)
	touch $@

$(VENV)/.serve: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install $(PIP_ARGS) -e ".[serve]"
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install $(PIP_ARGS) -e ".[dev]"
	touch $@ $(VENV)/.serve

install-serve: $(VENV)/.serve
install-dev: $(VENV)/.dev

demo: $(VENV)/.serve
	$(VENV)/bin/pneumo serve --artifact $(ARTIFACT) --host 127.0.0.1 --port $(PORT)

test: $(VENV)/.dev
	$(PY) -m pytest $(PYTEST_ARGS)

benchmarks: $(VENV)/.dev
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/serve.py

clean:
	rm -rf $(VENV) runs .pytest_cache
