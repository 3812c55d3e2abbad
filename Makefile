# Two entry points for a newcomer: `make demo` (the whole job end to end) and `make test`.
# Both create ./.venv on first use. torch is pinned first so pip never pulls a CUDA build here;
# elsewhere, for a CPU-only machine use: make TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= export,onnxruntime,video,plot,dev,ros-live
BIN := $(VENV)/bin
BUF := .ci/node/node_modules/.bin/buf

.PHONY: demo test kernels clean gpu-check trt-bindings ros-interfaces

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/s3rt demo --out s3rt_demo

# Python 3.10 is the floor (JetPack 6): vermin checks every module and test statically (~3 s)
PY_SOURCES := s3rt export runtime kernels benchmarks training tests ros

test: $(VENV)/.installed ros-interfaces $(BUF)
	$(BIN)/vermin --target=3.10- --violations --no-tips -q $(PY_SOURCES)
	$(BIN)/python .ci/lint_imports.py
	$(BIN)/python -m pytest -q

# ROS 2 interfaces (s3rt_interfaces, vision_msgs) built with cmake/rosidl against the ros-live wheels into
# .ros-build/ (cached; a no-op when up to date). Exit 3 = no ROS 2 toolchain for this Python: the live tests skip.
ros-interfaces: $(VENV)/.installed
	$(BIN)/python ros/build_interfaces.py --quiet || test $$? -eq 3

# buf (lints the serving .proto, tests/s3rt_serving/test_serving_conventions.py) from npm into an ignored
# folder; where npm is absent the test says so and skips.
$(BUF):
	@if command -v npm >/dev/null 2>&1; then npm install --silent --no-audit --no-fund --prefix .ci/node \
	  @bufbuild/buf@1.75.0 || echo "buf install failed: the proto lint test will try again"; fi

kernels:
	cmake -S . -B build && cmake --build build -j 2

clean:
	rm -rf $(VENV) build s3rt_demo .pytest_cache .ros-build

# Prepared GPU check: no venv, no install, no network. GPU_PYTHON=... picks the interpreter (default: the
# first of .venv/bin/python, python3, python that imports torch). Exits 2 with "no CUDA device" where there
# is none, 3 where torch cannot be imported.
GPU_PYTHON ?=
gpu-check:
	PYTHON="$(GPU_PYTHON)" benchmarks/gpu_check.sh gpu_check.md

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
