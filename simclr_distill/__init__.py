"""simclr_distill: SimCLR-S2 stage 3 (knowledge distillation) and the stages around it."""

try:  # Written at build time from git (setuptools-scm, see pyproject.toml).
  from simclr_distill._version import __version__
except ImportError:  # A source tree that was never installed: nothing names its code.
  __version__ = "0+unknown"
