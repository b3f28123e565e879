# `make run` runs the main job on the embedded model; `make test` runs the tests.
# Both set up .venv on first use (scripts/install.sh).
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	VENV=$(VENV) ./scripts/install.sh
	touch $@

run: install
	$(BIN)/selfcorrect eval

test: install
	$(BIN)/pytest

# Benchmarks print their figures; they are not tests (see BENCHMARKS.md).
bench: install
	$(BIN)/python bench/embedded_overhead.py
	$(BIN)/python bench/embedded_batch.py
	$(BIN)/python bench/embedded_batch.py --short-prompt --max-tokens 64
	$(BIN)/python bench/embedded_mixed.py --quant q4_1
	$(BIN)/python bench/embedded_mixed.py --quant q8_0
	$(BIN)/python bench/http_throughput.py
	$(BIN)/python bench/cache_rerun.py
	$(BIN)/python bench/sandbox_throughput.py
	$(BIN)/python bench/runner_overhead.py
	$(BIN)/python bench/eval_wall.py
	$(BIN)/python bench/memory_retrieval.py
	$(BIN)/python bench/serve_load.py
	$(BIN)/python bench/hf_generate.py

clean:
	rm -rf $(VENV) .selfcorrect .pytest_cache
