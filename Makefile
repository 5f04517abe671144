# The two commands of the README. Each one sets itself up on a fresh machine:
#   make report   generate the data set, execute the five notebooks, export reports/*.html
#                 (DATA=<folder> MATERIAL=<name> FREQ=<Hz>: the workbook on your recordings)
#   make test     ruff, unit tests, and pytest --nbmake over the notebooks
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gradkit-installed

.PHONY: report test setup lint unit notebooks data sync bench ddp clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@# The kernel inside the venv is the one make, nbmake and nbclient use (a venv's own kernels
	@# come first); the user-level copy lets a Jupyter installed elsewhere open the notebooks.
	$(PY) -m ipykernel install --sys-prefix --name gradkit --display-name "Python (gradkit)" >/dev/null
	$(PY) -m ipykernel install --user --name gradkit --display-name "Python (gradkit)" >/dev/null
	@touch $@

setup: $(STAMP)

data: $(STAMP)
	$(PY) -m gradkit.data

# make report DATA=<folder> MATERIAL=<name> FREQ=<Hz> [PARAMS="EPOCHS=4 SEEDS=[42]"]: your recordings
REPORT_ARGS = $(if $(DATA),--data "$(DATA)") $(if $(MATERIAL),--material $(MATERIAL)) \
	$(if $(FREQ),--freq $(FREQ)) $(foreach p,$(PARAMS),--param '$(p)')
report: data
	$(PY) -m gradkit.report $(REPORT_ARGS)

test: lint unit notebooks

lint: $(STAMP)
	$(VENV)/bin/ruff check gradkit tests benchmarks notebooks/*.py

unit: $(STAMP)
	$(PY) -m pytest -q tests

notebooks: $(STAMP)
	$(PY) -m pytest -q --nbmake --nbmake-timeout=900 notebooks/*.ipynb

sync: $(STAMP)
	$(VENV)/bin/jupytext --sync notebooks/*.py

# The peers (BackPACK, Opacus, PyHessian's algorithm) live in their own venv: never in the workbook's.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: requirements.txt benchmarks/requirements.txt
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet -r requirements.txt -r benchmarks/requirements.txt
	$(BENCH_VENV)/bin/python -m pip install --quiet --no-deps -e .
	@touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python benchmarks/per_sample_grads.py
	$(BENCH_VENV)/bin/python benchmarks/hessian_eigs.py

# A real 2-process DDP training (gloo, CPU) with the gradient-noise-scale hook: data set of
# 5,022 clips in build/ddp/data, per-step noise scale in build/ddp/noise_scale.csv.
ddp: $(STAMP)
	$(VENV)/bin/torchrun --standalone --nproc_per_node=2 -m gradkit.distributed.train

clean:
	rm -rf reports build test-artifacts
