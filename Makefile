# The two commands of the README: `make demo` (main job) and `make test` (tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test demo testbed testbed-llava testbed-qwen3 testbed-task sweep reproduce-paper clean

venv: $(STAMP)

# torch/torchvision pinned to the pair that works on CPU and GPU with lmms-eval's video stack.
# uv installs the same versions as pip in under a minute instead of 2.5 (parallel downloads and byte-compiling;
# compiled here as pip does, since a machine with PYTHONDONTWRITEBYTECODE set would otherwise compile torch and
# transformers from source in every process); where uv cannot reach the package index pip is configured for,
# pip installs them.
REQS := "torch==2.14.1" "torchvision==0.29.1" -e ".[test]"
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --native-tls --compile-bytecode --python $(BIN)/python $(REQS) || \
	  { echo "uv could not install; installing with pip"; $(BIN)/python -m pip install -q $(REQS); }
	touch $(STAMP)

# the browser test of `lvspec-report html` needs Debian's chromium + chromedriver (installed here when root;
# on a fresh machine the apt install runs beside the .venv's installs, both mostly download and unpack).
# Two pytest-xdist workers of one thread each: the suite is single-threaded tiny-model runs and CLI
# subprocesses, so two processes use a 2-core machine (TEST_WORKERS=0: one process).
TEST_WORKERS ?= 2
test:
	@bash scripts/ensure_chromium.sh & chromium=$$!; \
	$(MAKE) --no-print-directory venv; status=$$?; wait $$chromium; exit $$status
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

demo: venv
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m testbed.demo

# Retrain the testbed pair from scratch (fixed seeds, stops on validation checks; <= 90 min on 2 cores)
testbed: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m testbed.train --role all

# Retrain the LLaVA-OneVision testbed pair (same data and grammar; side by side, one thread each)
testbed-llava: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m testbed.train --role llava_ov

# Retrain the Qwen3-VL testbed pair (same data, grammar and bars as the Qwen2.5-VL pair; side by side, one thread each)
testbed-qwen3: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m testbed.train --role qwen3_vl

# Regenerate the testbed tasks' clips and docs (deterministic; the committed folder is its output)
testbed-task: venv
	$(BIN)/python -m testbed.make_task

# The settings sweep behind reports/testbed.md
sweep: venv
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m testbed.sweep

# The paper's evaluation on GPUs with the real checkpoints (docs/benchmarks.md); ARGS=--dry-run rehearses it on the CPU
reproduce-paper: venv
	$(BIN)/python -m benchmarks.reproduce_paper $(ARGS)

clean:
	rm -rf $(VENV) lvspec_runs
