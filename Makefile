# Persona: `make run` and `make test` work on a fresh machine (they create .venv themselves).
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
EXTRA ?= cpu
export DAGSTER_DISABLE_TELEMETRY=1
export DBT_SEND_ANONYMOUS_USAGE_STATS=false
export DO_NOT_TRACK=1
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false

.PHONY: install run test ui serve dbt-parse bench-embeddings bench-serving bench-quality clean

$(BIN)/.installed: pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null || { echo "Persona needs Python 3.11 ($(PY) not found; set PY=...)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and exactly 2.13.0 (the CPU build); a looser pin pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRA),dev]"
	touch $@

install: $(BIN)/.installed dbt_project/target/manifest.json

# dagster-dbt reads the manifest when the dbt assets module is imported: prepare it at install time.
dbt_project/target/manifest.json: $(BIN)/.installed $(wildcard dbt_project/*.yml) $(shell find dbt_project/models dbt_project/macros -type f 2>/dev/null)
	cd dbt_project && ../$(BIN)/dbt parse --quiet --profiles-dir . --project-dir .

run: install
	$(BIN)/persona run

test: install
	$(BIN)/python -m pytest -q tests

ui: install
	$(BIN)/persona ui

serve: install
	$(BIN)/persona serve

# server and load generator on different cores; needs a promoted model (`make run`)
bench-serving: install
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/search_quality.py

bench-quality: install
	$(BIN)/python bench/quality.py

# torch vs ONNX encoder texts/s on real titles; bench/gpu_check.py is the GPU counterpart
bench-embeddings: install
	$(BIN)/python bench/embeddings.py

clean:
	rm -rf warehouse artifacts models .dagster_home dbt_project/target dbt_project/logs
