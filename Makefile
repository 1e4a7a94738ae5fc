# Every target creates .venv when missing and installs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run serve test scenarios lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

# The main job: evaluate every bundled sample (the service replaces this
# once it exists).
run: $(STAMP)
	@for f in fhir_samples/*.json; do case $$f in *.expected.json) continue;; esac; \
	  echo "== $$f"; $(BIN)/cds evaluate $$f --as-of 2026-11-22 --format text || exit $$?; done

test: $(STAMP)
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

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
