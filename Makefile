# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   # virtualenv + install + the embedded digits study (stages 1, 2, 3 and baselines)
#   make test   # virtualenv + install + the whole test suite (what CI runs)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
WORKDIR ?= results/study_demo

.PHONY: install browser slurm demo smoke compare results dashboard report tensorboard test clean
install: $(VENV)/.installed

# The tested set of every dependency is pinned in constraints.txt (Python 3.11, Linux x86_64).
$(VENV)/.installed: pyproject.toml setup.py constraints.txt
	@echo "install: creating the virtualenv $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV)
	@echo "install: upgrading pip"
	@$(VENV)/bin/python -m pip install -q --upgrade pip
	@echo "install: simclr_distill[dev] with the tested versions (constraints.txt): TensorFlow and the rest, ~1.5 GB on a first install, a few minutes"
	@PYTHONWARNINGS=ignore $(VENV)/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
	@echo "install: done ($$($(VENV)/bin/python -c 'import simclr_distill; print("simclr_distill", simclr_distill.__version__)'))"
	@touch $@

demo: install
	$(VENV)/bin/python -m stages.study --workdir=$(WORKDIR)

smoke: install
	$(VENV)/bin/python -m stages.study --preset=smoke --workdir=results/study_smoke

# After `make demo`: the study's comparisons with their intervals, the table, the dashboard.
compare: install
	$(VENV)/bin/python -m stages.results --compare --workdirs=$(WORKDIR)

results: install
	$(VENV)/bin/python -m stages.results --workdirs=$(WORKDIR)

dashboard: install
	$(VENV)/bin/python -m stages.dashboard --workdirs=$(WORKDIR)

report: install
	$(VENV)/bin/python -m stages.dashboard --workdirs=$(WORKDIR) --export=$(WORKDIR)/report.html

# Every training run's curves (train and validation scalars, learning rate) at http://127.0.0.1:6006.
tensorboard: install
	$(VENV)/bin/tensorboard --logdir $(WORKDIR) --host 127.0.0.1

# The dashboard tests drive Debian's headless Chromium; install it where it is missing (as root,
# or through sudo). Without it those tests skip and say why.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo "installing chromium and chromium-driver for the dashboard tests"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  ($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    chromium chromium-driver >/dev/null) || echo "could not install chromium: browser tests will skip"; \
	fi

# The SLURM launcher's tests submit to a real single-node cluster on this machine (Debian's
# slurm-wlm and munge, installed and started where missing, as root or through sudo). Where it
# cannot start, they skip and say why.
slurm:
	@./tools/slurm-up

test: install browser slurm
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) *.egg-info
