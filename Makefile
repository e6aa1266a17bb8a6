# A newcomer needs two commands: `make run` and `make test`. Both start from nothing.
PY ?= python3
PORT ?= 2024
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test layers lint bench install clean

$(STAMP): pyproject.toml constraints.txt
	@echo "==> creating $(VENV) and installing Interlock with its dependencies (a few minutes the first time)"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Seeds the sample business systems and help centre (idempotent), then serves the graphs with the sample
# MCP servers alongside.
run: $(STAMP)
	@echo "==> seeding the sample tenants (acme, globex) and their help centre"
	$(BIN)/interlock seed
	$(BIN)/interlock serve --config langgraph.json --host 127.0.0.1 --port $(PORT) --with-mcp

# Lint, the whole suite, then the evaluation gate (router, retrieval, groundedness, refusal, injection,
# approval and safety invariants against committed baselines; offline, no key).
test: $(STAMP)
	$(BIN)/ruff check .
	$(MAKE) --no-print-directory layers
	$(BIN)/pytest -q
	LANGSMITH_TEST_TRACKING=false LANGSMITH_TRACING=false $(BIN)/interlock eval

# The import layers (pyproject.toml [tool.importlinter]). The folders install as interlock.<folder> through a
# package-dir mapping that import-linter cannot follow, so it reads a tree of symlinks shaped like the wheel.
LAYERS := .layers
layers: $(STAMP)
	rm -rf $(LAYERS) && mkdir -p $(LAYERS)/interlock
	ln -s $(CURDIR)/interlock/* $(LAYERS)/interlock/
	for d in server tools graphs policies evals mcp_servers; do ln -s $(CURDIR)/$$d $(LAYERS)/interlock/$$d; done
	cd $(LAYERS) && PYTHONPATH=$(CURDIR)/$(LAYERS) $(CURDIR)/$(BIN)/lint-imports --no-cache $(CURDIR)/pyproject.toml

# Benchmarks run in their own virtualenv: the reference server (bench extra) conflicts with weaviate-client.
.venv-bench/.installed: pyproject.toml
	$(PY) -m venv .venv-bench
	.venv-bench/bin/pip install -q --upgrade pip
	.venv-bench/bin/pip install -q -e '.[bench]'
	touch .venv-bench/.installed

bench: .venv-bench/.installed
	.venv-bench/bin/python bench/server_runs.py

clean:
	rm -rf $(VENV) .venv-bench .interlock $(LAYERS)
