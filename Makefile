# The three commands of the README. Each one sets itself up on a fresh machine:
#   make report   generate the data set, execute the five notebooks, export reports/*.html
#                 (DATA=<folder> MATERIAL=<name> FREQ=<Hz>: the workbook on your recordings)
#   make test     the default tier (CI): ruff, the unit tests not marked slow on both cores,
#                 the five notebooks with the smoke parameter set (notebooks/smoke.toml, outputs
#                 in build/smoke/) and the browser tests on those smoke reports
#   make test-full  every test, slow ones included, and the notebooks with their own parameters
#   make lab      JupyterLab on notebooks/ with this clone's kernel, on 127.0.0.1
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gradkit-installed
UV_PIN := uv==0.13.9
UV := $(VENV)/bin/uv

# This clone's kernels. Inside the venv: "gradkit" (the name the notebooks ask for), seen only by
# a Jupyter running from this venv (make lab, nbclient), which looks in its own environment first.
# A Jupyter installed elsewhere gets, with `make kernel`, a user-level kernel whose name and
# display name carry this clone's folder and a checksum of its path, so a second clone adds its
# own next to it instead of overwriting it. Its argv is this clone's venv Python and its
# PYTHONPATH this clone: it runs this clone's gradkit even when a venv is shared.
CLONE := $(CURDIR)
CLONE_ID := $(shell printf '%s' '$(CLONE)' | cksum | cut -d' ' -f1)
KERNEL_NAME := gradkit-$(shell printf '%s' '$(notdir $(CLONE))' | tr 'A-Z' 'a-z' | tr -c 'a-z0-9._-' '-')-$(CLONE_ID)
KERNEL_DISPLAY := Python (gradkit: $(CLONE))
LAB_PORT ?= 8888

.PHONY: report test test-full setup lint unit notebooks data sync bench ddp clean lab kernel kernel-remove

# Warn about the user-level kernel named "gradkit" that earlier versions of this Makefile
# registered for every clone (the last one set up won): a Jupyter outside the venv would run that
# clone's gradkit for these notebooks.
define CHECK_SHARED_KERNEL
import json, pathlib, sys
from jupyter_core.paths import jupyter_data_dir
spec = pathlib.Path(jupyter_data_dir(), "kernels", "gradkit", "kernel.json")
if spec.is_file() and json.loads(spec.read_text())["argv"][0] != sys.executable:
    print(f"warning: {spec.parent} (a user-level kernel named gradkit, left by an older set-up) "
          f"runs {json.loads(spec.read_text())['argv'][0]}, not this clone. A Jupyter outside "
          f"this clone's .venv would use it for these notebooks: remove it (rm -r '{spec.parent}') "
          "and register this clone's own with `make kernel`.", file=sys.stderr)
endef
export CHECK_SHARED_KERNEL

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# uv installs the lock from its cache in seconds where pip takes a minute or more.
	$(PY) -m pip install --quiet $(UV_PIN)
	$(UV) pip install --python $(PY) --quiet -r requirements.txt
	$(UV) pip install --python $(PY) --quiet --no-deps -e .
	@# The kernel inside the venv: the one make lab, nbclient and nbmake use. No user-level one.
	$(PY) -m ipykernel install --sys-prefix --name gradkit --display-name "Python (gradkit)" >/dev/null
	@$(PY) -c "$$CHECK_SHARED_KERNEL"
	@touch $@

setup: $(STAMP)

# JupyterLab 4 and the widget extension come from the lock; the venv's own kernels come first.
lab: data
	@echo "[lab] JupyterLab on notebooks/, kernel 'Python (gradkit)' = $(CLONE)/$(VENV); Ctrl-C stops it"
	JUPYTER_PREFER_ENV_PATH=1 $(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 \
	  --ServerApp.port=$(LAB_PORT) --ServerApp.root_dir=notebooks \
	  $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# For a Jupyter installed elsewhere (see the README): this clone's user-level kernel.
kernel: $(STAMP)
	$(PY) -m ipykernel install --user --name '$(KERNEL_NAME)' --display-name '$(KERNEL_DISPLAY)' \
	  --env PYTHONPATH '$(CLONE)' >/dev/null
	@echo "[kernel] registered '$(KERNEL_DISPLAY)' as $(KERNEL_NAME) (remove: make kernel-remove)"
	@$(PY) -c "$$CHECK_SHARED_KERNEL"

kernel-remove: $(STAMP)
	$(VENV)/bin/jupyter kernelspec remove -y '$(KERNEL_NAME)'

data: $(STAMP)
	$(PY) -m gradkit.data

# make report DATA=<folder> MATERIAL=<name> FREQ=<Hz> [PARAMS="EPOCHS=4 SEEDS=[42]"]: your recordings
# make report RUN=runs/my_experiment: notebooks 02 and 03 on a run recorded by gradkit.track.Tracker
REPORT_ARGS = $(if $(DATA),--data "$(DATA)") $(if $(MATERIAL),--material $(MATERIAL)) \
	$(if $(FREQ),--freq $(FREQ)) $(if $(RUN),--run "$(RUN)") $(foreach p,$(PARAMS),--param '$(p)')
# Each notebook's kernel trains on one thread: the notebooks run side by side, one per core.
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
report: $(if $(RUN),$(STAMP),data)  # a tracked run needs no synthetic set
	$(PY) -m gradkit.report --jobs $(JOBS) $(REPORT_ARGS)

# Two tiers. `make test` (CI): ruff, then pytest on both cores: every test not marked slow,
# among them the five notebooks executed with the smoke parameter set (tests/notebooks/
# test_smoke_notebooks.py, reports in build/smoke/, each built once per run whichever test asks
# first) and the browser tests of those reports. `make test-full`: the notebooks with their own
# parameters (make report), then every test, slow ones included.
PYTEST_TIERS = $(PY) -m pytest -q -n 2 --maxschedchunk 2 --durations=15
test: lint data
	$(PYTEST_TIERS) -m "not slow" tests

test-full: lint report
	$(PYTEST_TIERS) tests

lint: $(STAMP)
	$(VENV)/bin/ruff check gradkit tests benchmarks examples notebooks/*.py

unit: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow and not browser" tests

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
