# Every target creates .venv and installs requirements.txt into it when missing or changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/quickstart.yaml
export ZENML_ANALYTICS_OPT_IN := false

.PHONY: install quickstart process test test-fast sample-data dashboard mlflow-ui bench gpu-wheels gpu-check clean

$(STAMP): requirements.txt requirements-runtime.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and alone: pip takes the local CPU build of exactly this version if there is one.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

quickstart: install
	$(PY) run_pipeline.py --config $(CONFIG) --summary outputs/quickstart/summary.json

process: install
	$(PY) run_pipeline.py process --config $(CONFIG)

# Tests run in TEST_WORKERS processes (pytest-xdist), a test file per worker at a time: its module fixtures are built
# once, the longest modules first (tests/conftest.py, RUN_FIRST). TEST_WORKERS=0 runs them in this process. The 30
# slowest tests are listed at the end (the suite's budget is 35 minutes on 2 cores).
TEST_WORKERS ?= 2
PYTEST_WORKERS := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
test: install
	$(PY) -m pytest $(PYTEST_WORKERS) --durations=30

test-fast: install
	$(PY) -m pytest $(PYTEST_WORKERS) -m "not slow"

# Both serve the project's own stores on 127.0.0.1, in the foreground: Ctrl-C stops them.
dashboard: install
	$(PY) -m runner.dashboards zenml --port $(or $(PORT),8237)

mlflow-ui: install
	$(PY) -m runner.dashboards mlflow --port $(or $(PORT),5000)

# CPU benchmarks against plain baselines (not part of the tests); results go to bench/RESULTS.md by hand.
bench: install
	$(PY) -m bench.run_all

# The device check (README, "The GPU device check"). gpu-wheels, here, needs the package index; gpu-check runs on
# the GPU machine with its own python3 (no .venv there), or without CUDA checks only that the wheels install.
gpu-wheels: install
	$(PY) -m bench.gpu_check --build-wheels

gpu-check:
	$(or $(GPU_PYTHON),python3) -m bench.gpu_check --out $(or $(OUT),outputs)/gpu_check.json

sample-data:
	$(PYTHON) scripts/make_sample_data.py

clean:
	rm -rf .llm_trainer outputs .pytest_cache

# Any zenml command against the project's own store (a plain `zenml` reads the user's global one):
#   make zenml ARGS="model list"    make zenml ARGS="pipeline runs list"
.PHONY: zenml
zenml: install
	$(PY) -m runner.dashboards cli $(ARGS)
