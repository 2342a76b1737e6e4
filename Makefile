# The two quick-start commands (`make demo`, `make test`) each set up their own
# virtual environment from the project's files on a fresh clone.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Pinned versions of everything `setup` installs (CPython 3.11, Linux x86_64): see requirements/lock.py.
LOCK   := requirements/lock-cpu.txt

# A pip config can point find-links at a CPU-only torch wheel built without torchvision's
# matching version; clear it so the setup installs the pinned torch from the package index.
export PIP_FIND_LINKS :=
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup test test-fast lint demo bench lock clean

setup: $(STAMP)

# CPU onnxruntime (the `cpu` extra); a CUDA machine would use `gpu` instead (never both: one module name).
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c $(LOCK) -e '.[cpu,train,dev,milvus]'
	touch $(STAMP)

# The whole suite, as CI runs it. The speed guard (tests/conftest.py) allows an unmarked test 15 s here, three
# times the fast loop's 5 s, so that a slower or busier machine than the developer's does not turn CI red; the
# fast loop keeps the 5 s a developer sees.
test: $(STAMP)
	RTDGAN_TEST_LIMIT_S=$${RTDGAN_TEST_LIMIT_S:-15} $(BIN)/python -m pytest -q

# The edit-test loop: every test not marked slow (no venv installs, browsers, Milvus, schemathesis, training
# runs); under 3 minutes on 2 cores. tests/conftest.py fails an unmarked test that takes over 5 s.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

demo: $(STAMP)
	$(BIN)/rtd demo

# One benchmark that needs nothing built first (synthetic pairs per second); every other maintained benchmark and its
# command is in docs/benchmarks.md, the answered experiments in bench/experiments/README.md.
bench: $(STAMP)
	$(BIN)/python bench/bench_synth.py

# Refresh the lock files: upgrade the venv to the newest versions pyproject.toml allows, then freeze its
# dependency closures into requirements/lock-*.txt (commit them; the images, `setup` and CI install from them).
lock: $(STAMP)
	$(BIN)/pip install -q --upgrade --upgrade-strategy eager -e '.[cpu,train,dev,milvus]'
	$(BIN)/python requirements/lock.py
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
