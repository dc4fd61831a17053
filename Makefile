# One install path for the README, the demo, the tests and CI.
# `make test` and `make demo` each install what they need first on a fresh machine:
# Debian packages (FluidSynth + a General MIDI soundfont), a virtualenv in .venv,
# and this package with its pinned dependencies.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2

.PHONY: install system-deps test demo benchmarks clean

$(STAMP): setup.cfg pyproject.toml scripts/install_system_deps.sh
	bash scripts/install_system_deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,convert]'
	touch $@

install: $(STAMP)

system-deps:
	bash scripts/install_system_deps.sh

test: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal --durations=15 tests

demo: install
	bash scripts/demo.sh

# Needs the demo's synthetic dataset (`make demo` first); numbers are recorded in README.md.
# readme_numbers.py recomputes README.md's deterministic figures and fails if one is stale.
benchmarks: install
	$(PY) scripts/readme_numbers.py
	$(PY) -m benchmarks.input_pipeline --slakh_dir demo/slakh_synth --workers 2 --gcs_emulator --latency
	$(PY) -m benchmarks.forward --conditions 1,5
	$(PY) -m benchmarks.train_step
	$(PY) -m benchmarks.inference --max_rows 8
	$(PY) -m benchmarks.learn_synth

clean:
	rm -rf demo .pytest_cache
