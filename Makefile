# Two commands: `make demo` and `make test`. Both create .venv if it is missing and install into it;
# `make test` also installs ESLint with npm into .venv/js and lints the pages' scripts before pytest.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= convscope-out
JS     := $(VENV)/js

.PHONY: demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[demo]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

$(VENV)/.installed-eslint: Makefile
	npm install --no-save --no-audit --no-fund --prefix $(JS) eslint@9 @eslint/js@9 globals@17
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/convscope demo --out $(OUT)

test: $(VENV)/.installed-test $(VENV)/.installed-eslint
	$(BIN)/ruff check src tests benchmarks
	NODE_PATH=$(abspath $(JS))/node_modules $(JS)/node_modules/.bin/eslint --max-warnings 0 src/convscope/presentation/templates
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
