"""Multi-worker training: two local worker processes under MultiWorkerMirroredStrategy train a
distillation run to the single-worker result, only the chief writes, and a lost worker fails
the run cleanly (no hang, no results row) and a restart of the cluster resumes it.

Every process is `tests/multiworker_worker.py` (one `executor.execute_run` of offline
distillation on the digits demo, an "mlp" student) with TF_CONFIG naming two workers on free
loopback ports, one CPU device each. Every process has a timeout and every collective
`COLLECTIVE_TIMEOUT`, so a hung cluster fails the test instead of hanging CI.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from simclr_distill import keras_compat, labelling, models, results, teachers
from simclr_distill.data import digits
from simclr_distill.training import rundata, runtime

pytestmark = pytest.mark.faults

WORKER = pathlib.Path(__file__).with_name("multiworker_worker.py")
EPOCHS = 3
BATCH = 16  # Per replica: a global batch of 32 on two workers.
PROCESS_TIMEOUT = 150  # Seconds any worker process may run.
COLLECTIVE_TIMEOUT = 60  # Seconds a collective may wait for a peer.
FAIL_WITHIN = 90  # Seconds from a worker's death to the other's exit.


def _free_ports(count: int) -> list[int]:
  sockets = [socket.socket() for _ in range(count)]
  try:
    for s in sockets:
      s.bind(("localhost", 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


class _Process:
  """One worker process with its spec, report and log files under `directory/name`."""

  def __init__(self, directory: pathlib.Path, name: str, spec: dict, tf_config: dict | None):
    self.name, self.out = name, directory / f"{name}.json"
    spec_path = directory / f"{name}.spec.json"
    spec_path.write_text(json.dumps({**spec, "out": str(self.out)}))
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    if tf_config is not None:
      env["TF_CONFIG"] = json.dumps(tf_config)
    self.log_path = directory / f"{name}.log"
    self._log = open(self.log_path, "w")
    self.proc = subprocess.Popen([sys.executable, str(WORKER), str(spec_path)], env=env,
                                 stdout=self._log, stderr=subprocess.STDOUT)
    self.started = time.monotonic()

  def wait(self, timeout: float) -> int:
    """The exit code; a process still running after `timeout` (or PROCESS_TIMEOUT in all)
    is killed and fails the test."""
    timeout = min(timeout, PROCESS_TIMEOUT - (time.monotonic() - self.started))
    try:
      return self.proc.wait(timeout=max(timeout, 0.1))
    except subprocess.TimeoutExpired:
      self.kill()
      pytest.fail(f"worker {self.name} still ran after {timeout:.0f} s:\n{self.log()}")
    finally:
      self._log.close()

  def kill(self) -> None:
    """SIGKILL: a multi-worker process ignores SIGTERM (TensorFlow's preemption notifier
    catches it)."""
    if self.proc.poll() is None:
      self.proc.send_signal(signal.SIGKILL)
      self.proc.wait(timeout=30)
    self._log.close()

  def log(self) -> str:
    return self.log_path.read_text()[-6000:]

  def report(self) -> dict:
    return json.loads(self.out.read_text())

  def weights(self) -> list[np.ndarray]:
    with np.load(self.out.with_suffix(".npz")) as saved:
      return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def _cluster(directory: pathlib.Path, name: str, spec: dict, **per_worker) -> list[_Process]:
  """Starts the two workers of a cluster on free loopback ports."""
  hosts = [f"localhost:{port}" for port in _free_ports(2)]
  return [_Process(directory, f"{name}-{i}", {**spec, **per_worker},
                   {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})
          for i in range(2)]


def _finish(processes: list[_Process], timeout: float = PROCESS_TIMEOUT) -> None:
  try:
    codes = [p.wait(timeout) for p in processes]
  finally:
    for p in processes:
      p.kill()
  for p, code in zip(processes, codes):
    assert code == 0, f"worker {p.name} exited with {code}:\n{p.log()}"


def _max_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
  assert [w.shape for w in a] == [w.shape for w in b]
  return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """Digits data, a small teacher trained on it and its cached logits; the spec every process
  of these tests shares."""
  root = tmp_path_factory.mktemp("multiworker")
  data = digits.prepare_digits(root / "data", num_shards=2, percents=(10, 100))
  _, images, classes = digits.load_digits_arrays()
  keras.utils.set_random_seed(7)
  net = models.build_model("mlp", data.image_shape, 1, head="pooled", dropout=0.0, width=16)
  net.compile(optimizer=keras.optimizers.Adam(1e-2),
              loss=keras.losses.BinaryCrossentropy(from_logits=True))
  net.fit(images, digits.scheme_labels(classes, "basic").astype(np.float32), epochs=3,
          batch_size=128, verbose=0)
  (root / "zoo").mkdir()
  net.save(root / "zoo" / "t.keras")
  entry = teachers.TeacherEntry("t", "basic", 10, "t.keras", output="logits")
  labelling.label_with_teacher(teachers.Teacher(entry, net, "logits"), root / "zoo" / "t.keras",
                               data, root / "labels")
  spec = {"data_dir": str(root / "data"), "labels_dir": str(root / "labels"),
          "stage": "distill", "epochs": EPOCHS, "batch_size": BATCH, "optimizer": "sgd",
          "learning_rate": 0.05, "early_stopping": True,
          "collective_timeout": COLLECTIVE_TIMEOUT, "marker_dir": str(root)}
  return root, spec


@pytest.fixture(scope="module")
def trained(setup):
  """The run trained three ways: by one process on one device with the whole global batch
  ("one"), by one process mirrored over two logical CPUs ("mirrored", the same run spec as
  the cluster's), and by a cluster of two single-device workers ("worker-0", "worker-1")."""
  root, spec = setup
  singles = [
      _Process(root, "one", {**spec, "workdir": str(root / "one"), "strategy": "default",
                             "batch_size": 2 * BATCH}, None),
      _Process(root, "mirrored", {**spec, "workdir": str(root / "mirrored"),
                                  "strategy": "mirrored", "logical_cpus": 2}, None)]
  _finish(singles)
  workers = _cluster(root, "worker", spec, workdir=str(root / "cluster"), strategy="multi_worker")
  _finish(workers)
  return {p.name: p for p in (*singles, *workers)}


def _predictions(report: dict) -> pd.DataFrame:
  return pd.read_parquet(pathlib.Path(report["row"]["checkpoint"]).with_name("predictions.parquet"))


def test_the_writer_and_the_data_sharding_of_one_process():
  strategy = tf.distribute.get_strategy()
  assert runtime.is_writer(strategy) and not keras_compat.is_multi_worker(strategy)
  ds = rundata.shard_by_data(tf.data.Dataset.range(8)).shuffle(8, seed=0).batch(4)
  assert ds.options().experimental_distribute.auto_shard_policy == (
      tf.data.experimental.AutoShardPolicy.DATA)


def test_two_workers_train_to_the_single_worker_result(setup, trained):
  root, _ = setup
  chief, other = trained["worker-0"].report(), trained["worker-1"].report()
  assert (chief["is_writer"], other["is_writer"]) == (True, False)
  row = chief["row"]
  assert row["status"] == "ok" and row["epochs_run"] == EPOCHS
  assert (row["replicas"], row["batch_size"]) == (2, 2 * BATCH)
  # The results row on disk is the chief's; every worker scored the same predictions.
  assert results.read_row(root / "cluster", row["run_id"])["wall_seconds"] == row["wall_seconds"]
  assert other["row"]["run_id"] == row["run_id"] and other["row"]["auc"] == row["auc"]
  weights = trained["worker-0"].weights()
  # The replicas stay in sync: the other worker holds the chief's weights, bit for bit.
  assert _max_difference(weights, trained["worker-1"].weights()) == 0.0

  # The same run spec mirrored over two devices of one process: the same per-replica batches,
  # losses and summed gradients, so the same weights (measured: identical).
  mirrored = trained["mirrored"]
  to_mirrored = _max_difference(weights, mirrored.weights())
  assert to_mirrored <= 1e-6, (
      f"two workers and one two-device process differ by {to_mirrored:.3g} in a weight "
      "(tolerance 1e-6)")
  for metric in ("auc", "f1", "accuracy", "loss", "agreement", "teacher_kl", "best_epoch"):
    assert row[metric] == pytest.approx(mirrored.report()["row"][metric], rel=1e-6), metric
  # Predictions are gathered from both workers in the order of the test split.
  ours, theirs = _predictions(chief), _predictions(mirrored.report())
  assert ours["id"].tolist() == theirs["id"].tolist() and len(ours) == row["test_examples"]
  np.testing.assert_allclose(ours["student_prob"], theirs["student_prob"], rtol=0, atol=1e-6)

  # One device with the whole global batch: the same data and objective; the gradient is one
  # mean of 32 instead of a sum of two means of 16, so float rounding differs and grows over
  # the 120 SGD steps (measured: 2.4e-4 in a weight, 7e-5 in a probability).
  one = trained["one"]
  difference = _max_difference(weights, one.weights())
  assert difference <= 2e-3, (
      f"two workers and one single-device process differ by {difference:.3g} in a weight "
      "(tolerance 2e-3: float rounding of a differently summed gradient)")
  assert row["loss"] == pytest.approx(one.report()["row"]["loss"], abs=1e-3)
  assert row["auc"] == pytest.approx(one.report()["row"]["auc"], abs=2e-3)
  probabilities = float(np.max(np.abs(ours["student_prob"].to_numpy()
                                      - _predictions(one.report())["student_prob"].to_numpy())))
  assert probabilities <= 1e-3
  print(f"largest weight difference of two workers to one two-device process {to_mirrored:.3g}, "
        f"to one device {difference:.3g}; of a probability to one device {probabilities:.3g}")


def test_only_the_chief_writes_into_the_shared_workdir(trained):
  """The other worker takes part in every step, evaluation and prediction but writes nothing
  in the shared workdir (its file operations there are recorded by an audit hook)."""
  chief, other = trained["worker-0"].report(), trained["worker-1"].report()
  assert any(w.endswith("result.json") for w in chief["writes"])
  assert other["writes"] == [], "a non-chief worker wrote into the shared workdir"
  run_dir = pathlib.Path(chief["row"]["checkpoint"]).parent
  history = (run_dir / "history.csv").read_text().splitlines()
  assert [line.split(",")[0] for line in history[1:]] == [str(e) for e in range(EPOCHS)]


def test_only_the_chief_writes_a_multi_worker_pretraining(setup):
  """Stage 1 through the same run executor: on a cluster of two workers the chief writes the
  encoder, its config and history; the other worker trains every step and writes nothing."""
  root, spec = setup
  workers = _cluster(root, "pretrain", {**spec, "stage": "pretrain", "epochs": 2},
                     workdir=str(root / "pretrain"), strategy="multi_worker")
  _finish(workers)
  chief, other = (w.report() for w in workers)
  assert (chief["is_writer"], other["is_writer"]) == (True, False)
  assert chief["replicas"] == other["replicas"] == 2
  assert chief["epochs_trained"] == other["epochs_trained"] == [0, 1]
  assert other["writes"] == [], "a non-chief worker wrote into the shared workdir"
  for name in ("simclr.keras", "config.json", "history.csv"):  # Atomic writes go via a temporary.
    assert any(name in w for w in chief["writes"]), name
  out = root / "pretrain" / "pretrain" / "mw"
  assert keras.models.load_model(out / "simclr.keras").output.shape[-1] == 128
  history = (out / "history.csv").read_text().splitlines()
  assert [line.split(",")[0] for line in history[1:]] == ["0", "1"]
  assert not (out / "checkpoint").exists() and not list(out.glob("*.tmp*"))


def test_a_killed_worker_fails_the_run_cleanly_and_a_restart_resumes_it(setup, trained):
  root, spec = setup
  spec = {**spec, "workdir": str(root / "killed"), "strategy": "multi_worker"}
  marker = root / "held-1"
  # Worker 1 stops at the start of epoch 2 (epoch 1 finished and checkpointed); the chief
  # goes on into the epoch's first step and waits there for worker 1's gradients.
  workers = _cluster(root, "killed", spec, hold_at_epoch=1, hold_worker=1)
  try:
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while not marker.exists():
      assert all(p.proc.poll() is None for p in workers), "\n".join(p.log() for p in workers)
      assert time.monotonic() < deadline, "worker 1 never reached epoch 2"
      time.sleep(0.2)
    time.sleep(1.0)
    assert workers[0].proc.poll() is None, workers[0].log()
    workers[1].kill()
    killed = time.monotonic()
    code = workers[0].wait(FAIL_WITHIN)
  finally:
    for p in workers:
      p.kill()
  failed_after = time.monotonic() - killed
  log = workers[0].log()
  assert code != 0, f"the chief finished without its peer:\n{log}"
  assert failed_after < FAIL_WITHIN
  errors = ("UnavailableError", "DeadlineExceededError", "Collective ops is aborted")
  assert any(e in log for e in errors), f"no collective error in the chief's output:\n{log}"
  run_id = trained["worker-0"].report()["row"]["run_id"]
  assert not results.is_done(root / "killed", run_id)

  # The same command on both workers again: the run resumes and finishes.
  marker.unlink()
  restarted = _cluster(root, "restarted", spec)
  _finish(restarted)
  chief = restarted[0].report()
  row = results.read_row(root / "killed", run_id)
  assert row["status"] == "ok" and row["epochs_run"] == EPOCHS == chief["row"]["epochs_run"]
  assert chief["epochs_trained"] == list(range(1, EPOCHS)), "the restart did not resume"
  difference = _max_difference(restarted[0].weights(), trained["worker-0"].weights())
  assert difference <= 1e-6, (
      f"the resumed run differs by {difference:.3g} in a weight from the uninterrupted one "
      "(tolerance 1e-6)")
  print(f"the chief failed {failed_after:.1f} s after its peer was killed; the resumed run's "
        f"largest weight difference to the uninterrupted one: {difference:.3g}")
