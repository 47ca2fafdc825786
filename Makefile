# Roost — set-up, run, test and benchmark entry points.
# Every target creates the virtual environment it needs; none needs anything installed first
# but python3 (with venv) and, for the Debian packages, apt-get when run as root.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench soak deps-test deps-run clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev,postgresql]'
	touch $(STAMP)

deps-run:
	@scripts/debian-deps run

deps-test:
	@scripts/debian-deps test

## run: the daemon on the session bus (a private bus is started when none is there)
run: deps-run $(STAMP)
	@scripts/run-daemon $(VENV)

# Test processes: one a CPU and one more by default. Most of a test's time is spent
# waiting on the servers: two processes on two cores take a little over half the time of
# one and keep the cores about 70 % busy; a third took the suite from 8 m 43 s to 7 m 24 s
# on two cores. Each process starts its own servers; a test file runs whole in one
# process (its module's daemon is started once).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))

## test: the whole test suite against real dbus-daemon, Prosody, ejabberd and SQLite
test: deps-test $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check storage service bridge cli tests bench docs/examples
	$(VENV)/bin/ruff format --check storage service bridge cli tests bench docs/examples

# mypy cannot follow setuptools' package_dir mapping: give it a tree of links shaped as
# the installed package.
typecheck: $(STAMP)
	@rm -rf $(VENV)/typecheck && mkdir -p $(VENV)/typecheck/roost
	@for d in storage service bridge cli; do ln -s "$$PWD/$$d" $(VENV)/typecheck/roost/$$d; done
	cd $(VENV)/typecheck && MYPYPATH=. $(abspath $(VENV))/bin/mypy \
		--config-file $(abspath pyproject.toml) \
		-p roost.storage -p roost.service -p roost.bridge -p roost.cli

# bench/*.py are benchmarks, but for the report and the benches' own tooling; the soak
# runs for ten minutes and has a target of its own. bench/machine.py, the machine's speed,
# is measured first and last, so a run's absolute figures can be read beside another's.
BENCHES := $(filter-out bench/report.py bench/figures.py bench/ejabberd_fill.py bench/loopback.py bench/postgres_cluster.py bench/svg_plot.py bench/soak.py bench/machine.py,$(wildcard bench/*.py))

## bench: every benchmark in bench/, then a table of their JSON lines
bench: deps-test $(STAMP)
	@mkdir -p bench/results
	@rm -f bench/results/latest.jsonl
	@$(PY) bench/machine.py start | tee -a bench/results/latest.jsonl
	@for b in $(BENCHES); do \
		echo "== $$b" >&2; \
		$(PY) $$b > bench/results/current.jsonl || exit 1; \
		cat bench/results/current.jsonl | tee -a bench/results/latest.jsonl; \
	done
	@$(PY) bench/machine.py end | tee -a bench/results/latest.jsonl
	@$(PY) bench/report.py bench/results/latest.jsonl

## soak: 32 bus clients at one roostd for ten minutes (SOAK_ARGS='--database postgresql')
soak: deps-test $(STAMP)
	$(PY) bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
