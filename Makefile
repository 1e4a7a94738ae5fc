# Every target creates .venv when missing and installs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run samples test scenarios lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

# The main job: the CDS Hooks / REST service on its embedded defaults
# (bundled ruleset, SQLite audit trail under ./instance), loopback only,
# authentication explicitly off. It prints where it listens and a ready
# curl; Ctrl-C stops it.
run: $(STAMP)
	CDS_AUTH=off $(BIN)/cds serve --host 127.0.0.1 --port 8080

# Every bundled sample patient, evaluated and printed for a clinician.
samples: $(STAMP)
	@for f in fhir_samples/*.json; do case $$f in *.expected.json) continue;; esac; \
	  echo "== $$f"; $(BIN)/cds evaluate $$f --as-of 2026-11-22 --format text || exit $$?; done

test: $(STAMP)
	@bash scripts/test-services
	$(BIN)/cds rules lint
	$(BIN)/python -m pytest

scenarios: $(STAMP)
	$(BIN)/cds rules test

lint: $(STAMP)
	$(BIN)/pip install --quiet ruff mypy types-PyYAML
	$(BIN)/ruff check cds tests
	$(BIN)/mypy cds

bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.intake

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
