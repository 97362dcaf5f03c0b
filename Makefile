# The README's two commands: `make demo` (serve the bundled model) and `make test` (the whole suite).
# Both create .venv and install what they need on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
ARTIFACT ?= models/pneumo-resnet18-kermany
# The torch pair that installs on this project's machines; another one, e.g. TORCH="torch torchvision".
TORCH ?= torch==2.14.1 torchvision==0.29.1
# TORCH_BUILD=cpu takes PyTorch's CPU-only wheels (a few hundred MB instead of 5 GB of CUDA
# libraries); cuda takes the default (CUDA) wheels; auto: cpu unless nvidia-smi finds a GPU.
# Without access to download.pytorch.org it takes the default wheels. It applies when
# .venv is created: `make clean` first to switch an existing one.
TORCH_BUILD ?= auto
ifeq ($(TORCH_BUILD),auto)
override TORCH_BUILD := $(if $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu),cuda,cpu)
endif
# Asked only when it answers (checked when installing): offline, pip would retry it for every package.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX_cpu = $(if $(shell python3 -c "import socket, sys, urllib.parse as up; u = up.urlsplit(sys.argv[1]); \
	socket.create_connection((u.hostname, u.port or (443 if u.scheme == 'https' else 80)), 5)" \
	'$(TORCH_CPU_INDEX)' 2>/dev/null && echo up),--extra-index-url $(TORCH_CPU_INDEX))
TORCH_INDEX_cuda :=
ifeq ($(filter $(TORCH_BUILD),cpu cuda),)
$(error TORCH_BUILD must be auto, cpu or cuda, not '$(TORCH_BUILD)')
endif
PIP_ARGS ?=

export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1

.PHONY: demo test install-serve install-dev benchmarks clean

$(PY):
	python3 -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	@echo "pneumo: installing $(TORCH) ($(TORCH_BUILD) build; TORCH_BUILD=cpu|cuda chooses)"
	$(PY) -m pip install $(PIP_ARGS) $(TORCH_INDEX_$(TORCH_BUILD)) $(TORCH)
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
