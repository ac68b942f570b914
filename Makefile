# Two commands: `make run` and `make test`. Everything else is what they use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test bench faults lint sysdeps-build sysdeps-test translations bytecode clean

install: $(STAMP) translations bytecode

sysdeps-build:
	@scripts/sysdeps.sh build

sysdeps-test:
	@scripts/sysdeps.sh test

$(STAMP): pyproject.toml | sysdeps-build
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

# compiled catalogues are build products, never committed
translations: $(STAMP)
	$(BIN)/pybabel compile -d kiosk_app/translations -D messages
	$(BIN)/pybabel compile -d server/translations -D messages

# the units run the code read-only (ProtectSystem=strict): Python cannot cache its bytecode
# there, so it is compiled here (only what changed, after the first time)
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q server kiosk_app device_drivers

run: install
	$(BIN)/python scripts/run_all.py

test: sysdeps-test install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# fault injection, the long run (not part of `make test`, which runs a 45 s version):
# ten tills through killed servers and agents, PostgreSQL restarts, network cuts;
# results in docs/RESILIENCE.md. FAULTS_SECONDS=600 make faults for longer.
FAULTS_SECONDS ?= 300
faults: sysdeps-test install
	FAULTS_SECONDS=$(FAULTS_SECONDS) $(BIN)/python -m pytest -m faults -s -p no:cacheprovider tests/test_faults.py

# not part of `make test`: the numbers of DESIGN.md, see docs/BENCHMARKS.md (BENCH_CUSTOMERS,
# BENCH_PURCHASES, BENCH_BACKENDS, BENCH_DURATION; data sets cached in bench/data/)
bench: sysdeps-test install
	$(BIN)/python bench/run.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) instance .pytest_cache
