# Two entry points for a newcomer: `make demo` (the whole job end to end) and `make test`.
# Both create ./.venv on first use. torch is pinned first so pip never pulls a CUDA build here;
# elsewhere, for a CPU-only machine use: make TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= export,onnxruntime,video,plot,dev
BIN := $(VENV)/bin

.PHONY: demo test kernels clean gpu-check trt-bindings

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/s3rt demo --out s3rt_demo

test: $(VENV)/.installed
	$(BIN)/python .ci/lint_imports.py && $(BIN)/python -m pytest -q

kernels:
	cmake -S . -B build && cmake --build build -j 2

clean:
	rm -rf $(VENV) build s3rt_demo .pytest_cache

# Prepared GPU check (issue 15): exits 2 with "no CUDA device" where there is none.
gpu-check: $(VENV)/.installed
	PYTHON=$(BIN)/python benchmarks/gpu_check.sh gpu_check.md

# Real TensorRT / cuda-bindings wheels for tests/test_trt_api_conformance.py, unpacked OUTSIDE the repo.
TRT_BINDINGS_CACHE ?= $(HOME)/.cache/s3rt-trt-bindings
TRT_BINDINGS ?= tensorrt-cu12-bindings==10.16.1.11 tensorrt-cu12-bindings==11.4.0.106
CUDA_BINDINGS ?= cuda-bindings==12.9.4 cuda-bindings==13.5.0
trt-bindings: $(VENV)/.installed
	mkdir -p $(TRT_BINDINGS_CACHE)/wheels
	for spec in $(TRT_BINDINGS) $(CUDA_BINDINGS) cuda-pathfinder; do \
	  $(BIN)/pip download -q --no-deps --only-binary=:all: -d $(TRT_BINDINGS_CACHE)/wheels "$$spec" || exit 1; done
	cd $(TRT_BINDINGS_CACHE) && for w in wheels/tensorrt_cu12_bindings-*.whl; do \
	  v=$$(basename $$w | cut -d- -f2); mkdir -p trt-$$v && $(BIN)/python -m zipfile -e $$w trt-$$v; done
	cd $(TRT_BINDINGS_CACHE) && for w in wheels/cuda_bindings-*.whl; do \
	  v=$$(basename $$w | cut -d- -f2); mkdir -p cuda-bindings-$$v && $(BIN)/python -m zipfile -e $$w cuda-bindings-$$v \
	  && $(BIN)/python -m zipfile -e wheels/cuda_pathfinder-*.whl cuda-bindings-$$v; done
