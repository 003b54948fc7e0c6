# Two commands: `make demo` and `make test`. Both create .venv if it is missing and install into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= convscope-out

.PHONY: demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[demo]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

demo: $(VENV)/.installed-demo
	@mkdir -p $(OUT)
	$(BIN)/convscope predict sample:chelsea sample:coffee sample:grace_hopper
	@$(BIN)/convscope predict --json sample:chelsea sample:coffee sample:grace_hopper > $(OUT)/.predictions.json.tmp
	@mv $(OUT)/.predictions.json.tmp $(OUT)/predictions.json
	@echo "Result: $(abspath $(OUT))/predictions.json"

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
