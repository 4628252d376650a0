# Two commands do all set-up: `make demo` (main job, offline default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-quick test-benchmarks install clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[offline,test,benchmarks,export,static]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/demo.py

# One pytest worker per core, one torch thread each (workers x threads = cores: more threads only spin);
# a file's tests stay on one worker, so its module fixtures are built once.
PYTEST := HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist loadfile --durations=10

# Every test of the product; the benchmarks' own scripts run in test-benchmarks (CI runs both).
test: $(STAMP)
	$(PYTEST) -m "not benchmark" tests

# Without the tests marked slow (training runs end to end, torchrun / mp.spawn / loader-worker processes,
# the real MiniLM): for quick iteration.
test-quick: $(STAMP)
	$(PYTEST) -m "not slow and not benchmark" tests

# Each script of benchmarks/ at a tiny size, run as a user runs it, so a report can always be made again.
test-benchmarks: $(STAMP)
	$(PYTEST) -m benchmark tests

clean-venv:
	rm -rf $(VENV)
