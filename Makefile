# Two entry points from a fresh clone: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench clean interop

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU build of torch first, so the package's range is already satisfied
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/hybrida run

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

# C++ and Fortran hosts of the exported learned parts (interop/README.md); builds once into interop/build
interop: $(STAMP)
	interop/run.sh $(BIN)/python

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs interop/build
