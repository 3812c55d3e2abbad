# Two entry points for a newcomer: `make demo` (the whole job end to end) and `make test`.
# Both create ./.venv on first use. torch is pinned first so pip never pulls a CUDA build here;
# elsewhere, for a CPU-only machine use: make TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= export,onnxruntime,video,plot,dev
BIN := $(VENV)/bin

.PHONY: demo test kernels clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/s3rt demo --out s3rt_demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

kernels:
	cmake -S . -B build && cmake --build build -j 2

clean:
	rm -rf $(VENV) build s3rt_demo .pytest_cache
