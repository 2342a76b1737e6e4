# The two quick-start commands (`make demo`, `make test`) each set up their own
# virtual environment from the project's files on a fresh clone.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The machine's pip config points find-links at a CPU-only torch wheel that does
# not work with torchvision; use the registry's build instead.
export PIP_FIND_LINKS :=
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup test lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[train,dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

demo: $(STAMP)
	$(BIN)/rtd demo

bench: $(STAMP)
	$(BIN)/python bench/bench_synth.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
