"""Shared test set-up.

TensorFlow's CPU is split into two logical devices before anything initialises the runtime, so
MirroredStrategy can be tested with two replicas on a machine without GPUs.
"""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
  tf.config.set_logical_device_configuration(
      _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
  )
except RuntimeError:  # The runtime was initialised by an earlier import; tests needing two devices skip.
  pass

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO.parent / "shared" / "reference" / "simclr_s2"


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
  """The study's published tables and split lists, read in place from ../shared."""
  if not SHARED_REFERENCE.is_dir():
    pytest.skip(f"the study's reference data is not at {SHARED_REFERENCE} (../shared is absent)")
  return SHARED_REFERENCE


@pytest.fixture(scope="session")
def mirrored_strategy():
  """The one MirroredStrategy of the test process, over the two logical CPUs.

  Each MirroredStrategy numbers its collectives from the same start and the runtime keeps them
  by number, so a second strategy in one process whose collectives have other shapes aborts
  ("Shape mismatch in the collective instance"); every test shares this one.
  """
  if len(tf.config.list_logical_devices("CPU")) < 2:
    pytest.skip("TensorFlow was initialised before conftest could split the CPU in two")
  return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory):
  """The whole study on the smoke preset, run as a user runs it: (workdir, process)."""
  from tests.test_stages import stage

  workdir = tmp_path_factory.mktemp("study_smoke")
  return workdir, stage("stages.study", "--preset=smoke", f"--workdir={workdir}")


ARTIFACTS = REPO / "test-artifacts"  # Screenshots and reports the tests leave for people to see.
