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
