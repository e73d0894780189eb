# stalesgd: `make test` and `make run` set up everything they need from nothing.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# BLAS inside worker kernels must stay single-threaded (DESIGN §7).
export OPENBLAS_NUM_THREADS := 1
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1

.PHONY: all venv test test-slow run bench lint clean

all: test

# The example model plug-in is installed too: tests run it through its entry point.
PLUGIN := examples/plugin_tanh_mlp

# (setuptools warns on every editable install of a package whose name is also a folder here,
# as ./stalesgd is: it is that package's own source, so the warning is silenced)
$(STAMP): pyproject.toml $(PLUGIN)/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" \
	    $(BIN)/python -m pip install --quiet -e '.[test,ray]'
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e $(PLUGIN)
	touch $(STAMP)

venv: $(STAMP)

# Two test processes (pytest-xdist): about 8 minutes on 2 cores instead of 13.  The tests
# that start Ray instances share one process (their xdist_group).
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not bench" -n 2 --dist loadgroup --durations=15 tests

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m "slow" tests

run: $(STAMP)
	$(BIN)/stalesgd run

bench: $(STAMP)
	mkdir -p results
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[torch]' \
	    || echo "torch is not installable here: the PyTorch peer comparison will be skipped"
	$(BIN)/python -m pytest bench -m bench -p no:cacheprovider \
	    --benchmark-json=results/bench.json -q
	$(BIN)/python bench/summary.py results/bench.json

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info $(PLUGIN)/*.egg-info .pytest_cache
