# Two commands set everything up on a fresh machine: `make test` and `make reproduce`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install install-formats test export-check lint clean-check nbtest pytest pytest-default-isa reproduce baselines \
	baselines-cpu baselines-tiny bench train-bench train-profile op-profile reference-venv docs clean gpu-check

$(STAMP): settings.ini setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # the CPU wheel; an unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# the SAE libraries whose formats synthsae reads, for the round-trip tests that skip without them; torch stays pinned.
# dictionary-learning's dependencies (nnsight → transformers) pull a torchvision built for another torch, which breaks
# `import transformers` beside the CPU torch; nothing here needs torchvision, so it goes
install-formats: install
	$(PY) -m pip install -q -e ".[formats]" torch==2.13.0
	$(PY) -m pip uninstall -q -y torchvision

# synthsae/ must be exactly what the notebooks export
export-check: install
	$(BIN)/nbdev_export
	git diff --exit-code -- synthsae
	@test -z "$$(git status --porcelain --untracked-files=all -- synthsae)" || { git status --short -- synthsae; echo "synthsae/ has files the notebooks did not produce or that are not committed"; exit 1; }

# readable lines in the exported code: at most 120 characters, one statement per line (ruff, as pyproject.toml sets
# it; tools/lint.py drops only nbdev's generated `__all__` line, which can reach 130). The modules whose notebooks are
# fixed: all of them now
LINT_MODULES ?= synthsae
lint: install
	$(PY) tools/lint.py $(LINT_MODULES)

# notebooks are committed clean (nbdev_clean is idempotent on a clean notebook)
clean-check: install
	$(BIN)/nbdev_clean
	git diff --exit-code -- nbs

nbtest: install
	$(BIN)/nbdev_test --n_workers 1 --timing

# pytest's exit code 5 (no tests collected) is a failure too
PYTEST_TESTS = $(PY) -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

pytest: install
	$(PYTEST_TESTS)

# the tests again with torch's non-vectorised kernels and MKL's compatible code path: every sum in another order,
# as on another CPU (tolerances come from synthsae.testing, derived from the dtype and the magnitudes compared)
pytest-default-isa: install
	export ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE; $(PYTEST_TESTS)

test: export-check lint clean-check nbtest pytest pytest-default-isa

# the main job: the paper's tables and figures at the cpu scale (papermill notebooks 71–77, ≈ 40 min), summary.json and
# report.html under reports/; it resumes, so a second run only redoes what is missing
# OpenMP threads sleep when idle (PASSIVE): with libgomp's default they spin, and on a small machine where anything
# else runs, each of the sampler's many short parallel regions can wait for a descheduled thread (tools/bench.py)
reproduce: install
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(BIN)/synthsae reproduce --scale cpu --device cpu --out reports

# the baseline files the benchmark card ships (synthsae/data/baselines/): the 16k world's from the paper's numbers and
# the cpu world's from the L0 sweep of a full `make reproduce` (it reads reports/72_l0_sweep/); without a full
# reproduction, `make baselines-cpu` runs only that sweep
baselines: install
	$(PY) tools/make_baselines.py --paper --sweep reports

# the cpu world's baseline file from a fresh cpu-scale L0 sweep alone (the reproduction's F2: 25 SAEs of 1,500,000
# samples, about 25 min on 2 cores; trained runs are cached, so a rerun only redoes what is missing)
baselines-cpu: install
	rm -rf build/baselines-cpu && mkdir -p build
	$(BIN)/synthsae reproduce --scale cpu --device cpu --only F2 --out build/baselines-cpu
	$(PY) tools/make_baselines.py --sweep build/baselines-cpu

# the tiny world's baseline file, from a fresh tiny-scale L0 sweep (a few minutes)
baselines-tiny: install
	rm -rf build/baselines-tiny && mkdir -p build
	$(BIN)/synthsae reproduce --scale tiny --device cpu --only F2 --out build/baselines-tiny
	$(PY) tools/make_baselines.py --sweep build/baselines-tiny

# data-engine benchmark at paper scale (tools/bench.py): reports/benchmarks.json and the table of this run in
# reports/benchmarks.md; set REFERENCE_PYTHON to a Python with sae-lens to measure the reference beside ours
# (e.g. `make reference-venv bench REFERENCE_PYTHON=.ref-venv/bin/python`)
REFERENCE_PYTHON ?=
BENCH_THREADS ?= 0
BENCH_REPEATS ?= 5
bench: install
	mkdir -p reports
	$(PY) tools/bench.py --scale full --reference_python "$(REFERENCE_PYTHON)" --threads $(BENCH_THREADS) \
		--repeats $(BENCH_REPEATS) --out reports/benchmarks

# training throughput of the benchmark's headline SAE (tools/train_bench.py): reports/train_benchmark.json
train-bench: install
	mkdir -p reports
	OMP_WAIT_POLICY=PASSIVE SYNTHSAE_REFERENCE_PYTHON="$(REFERENCE_PYTHON)" $(PY) tools/train_bench.py --scale full \
		--out reports/train_benchmark.json

# where a training step spends its time, every architecture at the headline size: reports/train_profile.json
train-profile: install
	mkdir -p reports
	OMP_WAIT_POLICY=PASSIVE $(PY) tools/train_bench.py --scale full --profile --out reports/train_profile.json

# the training step operator by operator (torch.profiler; tools/op_profile.py): reports/op_profile/. On a GPU machine
# (no install there): `PYTHONPATH=. python3 tools/op_profile.py --out $$OUT/op_profile`
op-profile: install
	mkdir -p reports
	OMP_WAIT_POLICY=PASSIVE $(PY) tools/op_profile.py --out reports/op_profile

# one prepared command for a session with a GPU (≤ 9 min on one H100/H200): the CUDA-only tests, then `synthsae
# gpu-check` (sampling and SAE throughput per strategy, a budgeted paper-protocol BatchTopK-4096 run on the 16k world
# scored on 1M samples beside the paper): reports/gpu_check/gpu_check.json and one table. On a CPU: a smoke size.
# (the JSON is written even when the tests fail). A cached 16k world skips its construction:
# SYNTHSAE_CACHE=<folder holding synthsaebench-16k-*>
# On a lent GPU machine, which reaches no package registry: its own Python (torch with CUDA) plus carried wheels of
# synthsae and fastcore, and no install: `make gpu-check PY=python3 GPU_INSTALL= GPU_OUT=$$OUT/gpu_check`
GPU_BUDGET_S ?= 450
GPU_INSTALL ?= install
GPU_OUT ?= reports/gpu_check
gpu-check: $(GPU_INSTALL)
	mkdir -p $(dir $(GPU_OUT))
	$(PY) -m pytest -q tests/test_gpu.py -k cuda -p no:cacheprovider; rc=$$?; \
	$(PY) -c 'import sys; from synthsae.cli import main; sys.exit(main())' gpu-check --out $(GPU_OUT) \
		--budget_s $(GPU_BUDGET_S) && exit $$rc

# the reference implementation (SAELens) in its own venv, for side-by-side benchmarks only
reference-venv:
	test -x .ref-venv/bin/python || python3 -m venv .ref-venv
	.ref-venv/bin/python -m pip install -q torch==2.13.0
	.ref-venv/bin/python -m pip install -q sae-lens

# the documentation site in _docs/ (nbdev's processing; Quarto when installed, else self-contained pandoc pages) and
# README.md, built by tools/docs.py
docs: install
	$(PY) tools/docs.py --out _docs --readme True

clean:
	rm -rf $(VENV) _docs _proc build dist *.egg-info
