# `make demo` and `make test` each do all set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fdsl-installed
# faiss-cpu or faiss-gpu (the `gpu` extra): both install the same `faiss` package, so one replaces the other
FAISS  ?= faiss-cpu
FAISS_STAMP := $(VENV)/.fdsl-$(FAISS)

.PHONY: demo test test-quick lint bench clean gpu-wheels

$(STAMP): requirements.txt pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

$(FAISS_STAMP): $(STAMP)
	$(BIN)/pip uninstall -q -y faiss-cpu faiss-gpu faiss-gpu-cu11 faiss-gpu-cu12
	$(BIN)/pip install -q $(FAISS)
	rm -f $(VENV)/.fdsl-faiss-* && touch $(FAISS_STAMP)

demo: $(FAISS_STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH bash exe_scripts/demo.sh

# the tests on JOBS processes (pytest-xdist; CI has 2 cores); test-quick leaves out the `slow` end-to-end ones
JOBS ?= 2
test: $(FAISS_STAMP)
	$(BIN)/python -m pytest -q -n $(JOBS) --dist worksteal --durations=15 tests; status=$$?; \
	echo "the slow end-to-end tests: $(BIN)/python -m pytest -m slow --collect-only -q tests (make test-quick skips them)"; \
	exit $$status

test-quick: $(FAISS_STAMP)
	$(BIN)/python -m pytest -q -n $(JOBS) --dist worksteal -m "not slow" tests

lint: $(FAISS_STAMP)
	$(BIN)/ruff check .

bench: $(FAISS_STAMP)
	$(BIN)/python bench/render.py
	$(BIN)/python bench/train.py

# the wheels the GPU machine lacks (cp312, manylinux), into .whl/: `bash bench/gpu_check.sh --wheels .whl` there
gpu-wheels:
	PYTHON=$(PYTHON) bash bench/gpu_wheels.sh .whl

clean:
	rm -rf $(VENV) demo_out .pytest_cache
