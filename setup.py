"""simclr_distill: knowledge distillation of SimCLR-S2 teachers, reproduced and extended.

The build and the metadata (dependencies, extras, console scripts, the version from git) are
declared in pyproject.toml; this file stays for tools that look for it (`python setup.py
--version`, older pip).
"""

from setuptools import setup

setup()
