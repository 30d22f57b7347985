"""Packaging: the install extras (browsing without TensorFlow), the pinned tested set, and the
version a results row records."""

import importlib.metadata
import pathlib
import re
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

import simclr_distill
from simclr_distill import provenance
from tests.conftest import REPO

# Shadows TensorFlow and Keras the way a laptop without them fails: `import tensorflow` raises
# ModuleNotFoundError for that name.
_ABSENT = ("tensorflow", "keras", "tensorboard", "tensorflow_datasets")


@pytest.fixture(scope="module")
def without_tensorflow(tmp_path_factory) -> dict:
  shadow = tmp_path_factory.mktemp("without_tensorflow")
  for name in _ABSENT:
    (shadow / name).mkdir()
    (shadow / name / "__init__.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n")
  return {"PYTHONPATH": f"{shadow}:{REPO}", "TF_CPP_MIN_LOG_LEVEL": "2",
          "PATH": "/usr/bin:/bin"}


def _run(env, *args, cwd=REPO):
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=300)


def test_results_and_the_dashboard_run_where_tensorflow_cannot_be_imported(
    without_tensorflow, smoke_study, tmp_path):
  workdir, _ = smoke_study
  env = without_tensorflow
  probe = _run(env, "stages.results", "--help")  # The shadow really is in the way:
  assert probe.returncode == 0
  check = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, cwd=REPO,
                         capture_output=True, text=True)
  assert "No module named 'tensorflow'" in check.stderr

  table = _run(env, "stages.results", f"--workdirs={workdir}", "--group_by=stage")
  assert table.returncode == 0, table.stderr[-3000:]
  assert "distill" in table.stdout and "finetune" in table.stdout
  compared = _run(env, "stages.results", "--compare", f"--workdirs={workdir}")
  assert compared.returncode == 0, compared.stderr[-3000:]
  assert "distilled vs baseline" in compared.stdout
  report = tmp_path / "report.html"
  exported = _run(env, "stages.dashboard", f"--workdirs={workdir}", f"--export={report}")
  assert exported.returncode == 0, exported.stderr[-3000:]
  assert report.stat().st_size > 10_000 and "Traceback" not in exported.stderr


def test_a_training_stage_without_tensorflow_names_the_extra_to_install(without_tensorflow,
                                                                         tmp_path):
  proc = _run(without_tensorflow, "stages.distill", "--preset=smoke",
              f"--workdir={tmp_path / 'w'}")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert ("needs tensorflow, which is not installed; install the 'train' extra: "
          "pip install 'simclr_distill[train]'") in proc.stderr


def _requirements() -> list[Requirement]:
  return [Requirement(r) for r in importlib.metadata.requires("simclr_distill")]


def _extras(requirement: Requirement) -> set[str]:
  """The extras a requirement belongs to ({""} for the base install)."""
  marker = str(requirement.marker or "")
  return set(re.findall(r'extra == "([^"]+)"', marker)) or {""}


def test_the_base_and_dashboard_installs_need_no_tensorflow_and_extras_hold_the_rest():
  by_extra: dict[str, set[str]] = {}
  for requirement in _requirements():
    for extra in _extras(requirement):
      by_extra.setdefault(extra, set()).add(requirement.name.lower())
  heavy = {"tensorflow", "keras", "tensorboard", "tensorflow-datasets"}
  assert not heavy & (by_extra[""] | by_extra["dashboard"])
  assert {"dash", "dash-ag-grid", "plotly"} <= by_extra["dashboard"]
  assert {"tensorflow", "keras", "tensorboard"} <= by_extra["train"]
  assert by_extra["tfds"] == {"tensorflow-datasets"}
  assert "tensorflow" in by_extra["gpu"]
  gpu = [r for r in _requirements() if "gpu" in _extras(r) and r.name == "tensorflow"]
  assert gpu and gpu[0].extras == {"and-cuda"}


def test_upper_bounds_where_a_major_version_would_break_us():
  bounded = {r.name.lower(): r.specifier for r in _requirements()}
  for name in ("dash", "keras", "pandas", "tensorflow", "numpy", "plotly"):
    assert any(s.operator == "<" for s in bounded[name]), f"{name} has no upper bound"


def test_the_constraints_file_pins_the_tested_set():
  pins = {}
  for line in (REPO / "constraints.txt").read_text().splitlines():
    if line.strip() and not line.startswith("#"):
      name, _, version = line.partition("==")
      assert version, f"constraints.txt: {line!r} is not NAME==VERSION"
      pins[name.lower().replace("_", "-")] = version
  # Every dependency of the test install is pinned, at the version installed here.
  for requirement in _requirements():
    name = requirement.name.lower().replace("_", "-")
    if name == "simclr-distill":
      continue
    assert name in pins, f"{name} is not pinned in constraints.txt (regenerate it: README)"
    assert importlib.metadata.version(name) == pins[name], (
        f"{name} {importlib.metadata.version(name)} is installed but constraints.txt pins "
        f"{pins[name]}")


def test_the_version_comes_from_the_packages_build_metadata(monkeypatch):
  installed = importlib.metadata.version("simclr_distill")
  assert simclr_distill.__version__ == installed
  assert re.fullmatch(r"\d+\.\d+(\.\d+)?(\.dev\d+)?(\+[\w.]+)?", installed), installed
  # Outside a checkout that tracks the package (a wheel in site-packages), the build's own
  # version is recorded as it is.
  provenance.code_version.cache_clear()
  monkeypatch.setattr(provenance, "checkout_commit", lambda package_dir: "")
  assert provenance.code_version() == installed
  # In its own checkout (an editable install), the checkout's commit replaces the build's.
  provenance.code_version.cache_clear()
  monkeypatch.setattr(provenance, "checkout_commit", lambda package_dir: "abc1234")
  assert re.fullmatch(re.escape(installed.split("+")[0]) + r"\+gabc1234(\.dirty)?",
                      provenance.code_version())
  provenance.code_version.cache_clear()


def test_pyproject_declares_the_build():
  text = (REPO / "pyproject.toml").read_text()
  assert re.search(r"^\[build-system\]\nrequires = \[.*setuptools-scm", text, re.M)
  assert 'build-backend = "setuptools.build_meta"' in text
  assert (REPO / "setup.py").is_file()
  assert pathlib.Path(simclr_distill.__file__).with_name("_version.py").is_file()
