# Both targets set themselves up on a fresh clone: a virtual environment in .venv,
# torch pinned first (its CPU wheel; an unpinned torch pulls CUDA packages), then the project.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser compiler test demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The report's browser test needs a Chromium from the system's packages (never a downloaded build);
# as root on Debian/Ubuntu it is installed here, elsewhere that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq >/dev/null 2>&1 && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; } || \
	  echo "chromium is not installed: the report's browser test will be skipped"

# DeepSpeed compiles its CPU communication op with the system's C++ compiler the first time a ZeRO run
# starts on CPU; as root on Debian/Ubuntu g++ is installed here, elsewhere the ZeRO tests need one.
compiler:
	@command -v g++ >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq >/dev/null 2>&1 && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null 2>&1; } || \
	  echo "g++ is not installed: DeepSpeed cannot build its CPU ops, the ZeRO tests will fail"

test: $(STAMP) browser compiler
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/python -m vietnamese_ai.demo

clean:
	rm -rf $(VENV) runs .pytest_cache
