"""Fault injection: preemption mid-run, kills at any moment of a write, concurrent shards, bad
inputs. Each test breaks something on purpose and checks the pipeline loses nothing and says
what went wrong (marker `faults`, part of the default run and of CI)."""

import numpy as np
import pytest
import tensorflow as tf

from simclr_distill import checkpointing, distill, results
from simclr_distill.data import digits
from simclr_distill.matrix import RunSpec

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return digits.prepare_digits(tmp_path_factory.mktemp("faults") / "data", num_shards=2,
                               percents=(100,))


def _run(data, **changes):
  spec = dict(stage="baseline", arch="mlp", labeling="basic", split_percent=100, optimizer="adam",
              learning_rate=1e-3, seed=3, protocol="holdout", task="binary", epochs=3,
              batch_size=32, early_stopping=True, patience=0, monitor="val_label_loss",
              head="pooled", dropout=0.3, width=16, dataset=data.fingerprint(), augment="mild_crop")
  spec.update(changes)
  return RunSpec(**spec)


def _context(data, workdir, every_steps=0):
  return distill.RunContext(workdir=workdir, data=data, strategy=tf.distribute.get_strategy(),
                            reuse_models=0,
                            checkpoint=checkpointing.CheckpointPolicy(every_steps, 0.0))


class _Preempted(BaseException):
  """Stands for a kill: not an Exception, so nothing on the way catches it."""


def _weights(row):
  import keras
  return keras.models.load_model(row["checkpoint"]).get_weights()


METRICS = ("f1", "auc", "accuracy", "tp", "fp", "tn", "fn", "epochs_run", "best_epoch",
           "selected_epoch", "last_f1", "status")


def test_a_run_preempted_mid_epoch_resumes_at_its_last_checkpoint_to_the_same_result(
    data, tmp_path, monkeypatch):
  run = _run(data)
  reference = distill.execute_run(run, _context(data, tmp_path / "reference"))
  assert reference["status"] == "ok"

  workdir = tmp_path / "preempted"
  original = checkpointing.StepCheckpoint.on_train_batch_end
  seen = []

  def kill_after_checkpoints(self, batch, logs=None):
    original(self, batch, logs)
    seen.append(self.saves)
    if self._epoch == 1 and self._done == 7:  # Checkpointed at step 5 of epoch 2; 2 steps lost.
      raise _Preempted()

  monkeypatch.setattr(checkpointing.StepCheckpoint, "on_train_batch_end", kill_after_checkpoints)
  with pytest.raises(_Preempted):
    distill.execute_run(run, _context(data, workdir, every_steps=5))
  run_dir = workdir / "runs" / run.run_id
  saved = checkpointing.StepCheckpoint(run_dir, list).saved_position()
  assert (saved.epoch, saved.step) == (1, 5), saved
  assert not results.is_done(workdir, run.run_id)
  monkeypatch.setattr(checkpointing.StepCheckpoint, "on_train_batch_end", original)

  resumed = distill.execute_run(run, _context(data, workdir, every_steps=5))
  for key in METRICS:
    assert resumed[key] == reference[key], key
  for got, want in zip(_weights(resumed), _weights(reference)):
    np.testing.assert_array_equal(got, want)
  history = (run_dir / "history.csv").read_text().splitlines()
  reference_history = (tmp_path / "reference" / "runs" / run.run_id / "history.csv").read_text().splitlines()
  assert [line.split(",")[0] for line in history[1:]] == ["0", "1", "2"]
  assert history == reference_history  # The resumed epoch's means are the whole epoch's.
  assert not (run_dir / checkpointing.STATE_FILE).exists()


# ---- a real kill: SIGKILL of a stage command, then the same command again ----------------------

import json
import os
import re
import pathlib
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _stage(module: str, *args: str, **popen) -> subprocess.Popen:
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
  return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-3000:]
  return out


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
  deadline = time.monotonic() + timeout
  while not predicate():
    if proc.poll() is not None:
      raise AssertionError(f"the process ended before the fault: {proc.stdout.read()[-3000:]}")
    assert time.monotonic() < deadline, "timed out waiting for the moment to inject the fault"
    time.sleep(0.02)


BASELINE = ("--preset=smoke", "--split_percents=100", "--optimizers=adam", "--patience=0",
            "--batch_size=16", "--steps_per_execution=1", "--checkpoint_steps=10")


def _row(workdir: pathlib.Path) -> dict:
  (path,) = workdir.glob("runs/*/result.json")
  return json.loads(path.read_text())


def test_sigkill_mid_run_then_the_same_command_ends_as_an_uninterrupted_run(tmp_path):
  epochs = "--epochs=40"
  reference = _stage("stages.baseline", f"--workdir={tmp_path / 'reference'}", epochs, *BASELINE)
  _finish(reference)
  workdir = tmp_path / "killed"
  command = ("stages.baseline", f"--workdir={workdir}", epochs, *BASELINE)
  proc = _stage(*command)

  def mid_run() -> bool:  # A checkpoint past epoch 3, mid-epoch.
    states = list(workdir.glob(f"runs/*/{checkpointing.STATE_FILE}"))
    if not states:
      return False
    try:
      position = checkpointing.StepCheckpoint(states[0].parent, list).saved_position()
    except checkpointing.CheckpointError:
      return False
    return position.epoch >= 3 and position.step > 0

  _wait_for(mid_run, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=30)
  assert proc.returncode == -signal.SIGKILL
  assert not list(workdir.glob("runs/*/result.json"))
  killed_at = checkpointing.StepCheckpoint(
      next(workdir.glob(f"runs/*/{checkpointing.STATE_FILE}")).parent, list).saved_position()

  out = _finish(_stage(*command))
  assert f"resuming from" in out and f"epoch {killed_at.epoch + 1}, step" in out, out[-2000:]
  got, want = _row(workdir), _row(tmp_path / "reference")
  for key in (*METRICS, "run_id", "train_examples", "test_examples"):
    assert got[key] == want[key], key
  import keras
  for a, b in zip(keras.models.load_model(got["checkpoint"]).get_weights(),
                  keras.models.load_model(want["checkpoint"]).get_weights()):
    np.testing.assert_array_equal(a, b)


def test_racing_shards_and_a_duplicated_shard_train_every_run_exactly_once(tmp_path):
  workdir = tmp_path / "shared"
  common = (f"--workdir={workdir}", "--preset=smoke", "--split_percents=10,100", "--seeds=0,1",
            "--epochs=3", "--optimizers=adam,sgd", "--num_shards=2")
  # Shard 1 is given twice by mistake; all three start at once on one directory.
  procs = [_stage("stages.baseline", *common, f"--shard_index={i}") for i in (0, 1, 1)]
  outs = [_finish(p) for p in procs]
  table = results.read_rows([workdir])
  assert len(table) == 8 and table["run_id"].is_unique and (table["status"] == "ok").all()
  import pandas as pd
  consolidated = pd.read_parquet(workdir / results.TABLE_PARQUET)
  assert sorted(consolidated["run_id"]) == sorted(table["run_id"])
  # Each run was trained by one process: its log line appears once over all the processes.
  trained = [m for out in outs for m in re.findall(r"\[baseline \d+/\d+\] (\S+): ok f1=", out)]
  assert sorted(trained) == sorted(table["run_id"]), trained
  for run_id in table["run_id"]:  # One history line per epoch: no two writers in one run dir.
    lines = (workdir / "runs" / run_id / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2"], run_id
