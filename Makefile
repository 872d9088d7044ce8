# make demo  - create .venv, install shoal, run the example job on a LocalCluster
# make test  - create .venv with the test extras, run the test suite
# make check - lint (ruff), format check, type check (mypy)
# make bench - create .venv with the bench extras, run shoal and distributed side by side
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test check lint format clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[dask]"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[test]"
	touch $(VENV)/.installed $@

$(VENV)/.installed-bench: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[bench]"
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(PY) examples/demo.py

test: $(VENV)/.installed-test
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: $(VENV)/.installed-bench
	$(PY) -m benchmarks $(BENCH_ARGS)

check: $(VENV)/.installed-test
	$(VENV)/bin/ruff check shoal tests examples buildtools setup.py
	$(VENV)/bin/ruff format --check shoal tests examples buildtools setup.py
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy buildtools/shoal_build.py

format: $(VENV)/.installed-test
	$(VENV)/bin/ruff format shoal tests examples buildtools setup.py
	$(VENV)/bin/ruff check --fix shoal tests examples buildtools setup.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
