# Two entry points, each sets everything up on a fresh machine and is idempotent:
#   make demo   compare GFE, PCA and autoencoders on digits (table + PNG)
#   make test   run the test suite
# The virtual environment is rebuilt only when the package metadata or the pins change.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.skgfe-installed
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check \
	--constraint requirements/constraints.txt

.PHONY: demo test lint docs bench bench-quick ci clean

$(STAMP): setup.cfg pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing skgfe and its pinned dependencies into $(VENV) (log: $(VENV)/install.log)"
	$(PIP_INSTALL) --editable '.[test,docs,demo]' > $(VENV)/install.log 2>&1 \
		|| { tail -n 40 $(VENV)/install.log; exit 1; }
	$(PY) -c "import skgfe, torch, torchdiffeq, sklearn"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m skgfe.demo

test: $(STAMP)
	$(PY) -m ruff check skgfe tests benchmarks examples docs/conf.py
	$(PY) -m pytest -n 2 --dist loadgroup

lint: $(STAMP)
	$(PY) -m ruff check skgfe tests benchmarks examples docs/conf.py
	$(PY) -m ruff format --check skgfe tests benchmarks examples docs/conf.py

docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

bench: $(STAMP)
	$(PY) benchmarks/bench_flows.py
	$(PY) benchmarks/bench_data_efficiency.py
	$(PY) benchmarks/bench_shapes.py
	$(PY) benchmarks/bench_stopping_window.py
	$(PY) benchmarks/bench_time_to_error.py
	$(PY) benchmarks/bench_training_longer.py
	$(PY) benchmarks/bench_code_prior.py
	$(PY) benchmarks/bench_vae_dlm.py
	$(PY) benchmarks/bench_missing.py
	$(PY) benchmarks/bench_gpu_encoding.py

bench-quick: $(STAMP)
	$(PY) benchmarks/bench_data_efficiency.py --quick --out $${TMPDIR:-/tmp}/skgfe-bench-quick
	$(PY) benchmarks/bench_shapes.py --quick --out $${TMPDIR:-/tmp}/skgfe-bench-quick
	$(PY) benchmarks/bench_stopping_window.py --quick --out $${TMPDIR:-/tmp}/skgfe-bench-quick
	$(PY) benchmarks/bench_time_to_error.py --quick --out $${TMPDIR:-/tmp}/skgfe-bench-quick
	$(PY) benchmarks/bench_training_longer.py --quick --out $${TMPDIR:-/tmp}/skgfe-bench-quick
	$(PY) benchmarks/bench_code_prior.py --quick --out $${TMPDIR:-/tmp}/skgfe-bench-quick
	$(PY) benchmarks/bench_vae_dlm.py --quick --out $${TMPDIR:-/tmp}/skgfe-bench-quick
	$(PY) benchmarks/bench_missing.py --quick --out $${TMPDIR:-/tmp}/skgfe-bench-quick

clean:
	rm -rf $(VENV) docs/_build docs/auto_examples docs/gen_modules docs/generated
