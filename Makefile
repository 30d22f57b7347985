# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   # virtualenv + install + the embedded digits study (stages 1, 2, 3 and baselines)
#   make test   # virtualenv + install + the whole test suite (what CI runs)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
WORKDIR ?= results/study_demo

.PHONY: install demo smoke test clean
install: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(VENV)/bin/python -m stages.study --workdir=$(WORKDIR)

smoke: install
	$(VENV)/bin/python -m stages.study --preset=smoke --workdir=results/study_smoke

test: install
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) *.egg-info
