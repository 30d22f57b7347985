"""Fault injection: preemption mid-run, kills at any moment of a write, concurrent shards, bad
inputs. Each test breaks something on purpose and checks the pipeline loses nothing and says
what went wrong (marker `faults`, part of the default run and of CI)."""

import numpy as np
import pytest
import tensorflow as tf

from simclr_distill import checkpointing, results
from simclr_distill.data import digits
from simclr_distill.matrix import RunSpec
from simclr_distill.training import context, executor, loop

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
  return context.RunContext(workdir=workdir, data=data, strategy=tf.distribute.get_strategy(),
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
  reference = executor.execute_run(run, _context(data, tmp_path / "reference"))
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
    executor.execute_run(run, _context(data, workdir, every_steps=5))
  run_dir = workdir / "runs" / run.run_id
  saved = checkpointing.StepCheckpoint(run_dir, list).saved_position()
  assert (saved.epoch, saved.step) == (1, 5), saved
  assert not results.is_done(workdir, run.run_id)
  monkeypatch.setattr(checkpointing.StepCheckpoint, "on_train_batch_end", original)

  resumed = executor.execute_run(run, _context(data, workdir, every_steps=5))
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
  row = json.loads(path.read_text())
  return {**row, "checkpoint": results.resolve_checkpoint(row["checkpoint"], workdir)}


EPOCHS = "--epochs=40"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """The workdir of one baseline run trained without interruption (what a resumed one equals)."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  _finish(_stage("stages.baseline", f"--workdir={workdir}", EPOCHS, *BASELINE))
  return workdir


def _mid_run(workdir: pathlib.Path) -> bool:
  """Whether a run's checkpoint is past epoch 3, mid-epoch."""
  states = list(workdir.glob(f"runs/*/{checkpointing.STATE_FILE}"))
  if not states:
    return False
  try:
    position = checkpointing.StepCheckpoint(states[0].parent, list).saved_position()
  except checkpointing.CheckpointError:
    return False
  return position.epoch >= 3 and position.step > 0


def _assert_same_run(workdir: pathlib.Path, reference: pathlib.Path) -> None:
  got, want = _row(workdir), _row(reference)
  for key in (*METRICS, "run_id", "train_examples", "test_examples"):
    assert got[key] == want[key], key
  import keras
  for a, b in zip(keras.models.load_model(got["checkpoint"]).get_weights(),
                  keras.models.load_model(want["checkpoint"]).get_weights()):
    np.testing.assert_array_equal(a, b)


def test_sigusr1_checkpoints_exits_75_and_the_rerun_ends_as_an_uninterrupted_run(
    tmp_path, uninterrupted):
  """SLURM's warning before a time limit (--signal=B:USR1@N, forwarded by the task script):
  the run checkpoints at its next step and the command exits with status 75, which the task
  script requeues; the same command then resumes there and ends bit-equal."""
  from simclr_distill import preemption

  workdir = tmp_path / "warned"
  command = ("stages.baseline", f"--workdir={workdir}", EPOCHS, *BASELINE)
  proc = _stage(*command)
  _wait_for(lambda: _mid_run(workdir), proc)
  proc.send_signal(signal.SIGUSR1)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == preemption.EXIT_CODE, out[-2000:]
  assert "stopped by SIGUSR1 after checkpointing the training run" in out, out[-2000:]
  assert not list(workdir.glob("runs/*/result.json"))
  saved = checkpointing.StepCheckpoint(
      next(workdir.glob(f"runs/*/{checkpointing.STATE_FILE}")).parent, list).saved_position()
  assert saved.epoch >= 3 and not saved.stopped
  out = _finish(_stage(*command))
  assert f"resuming from" in out and f"epoch {saved.epoch + 1}, step {saved.step}" in out, out[-2000:]
  _assert_same_run(workdir, uninterrupted)


def test_sigkill_mid_run_then_the_same_command_ends_as_an_uninterrupted_run(tmp_path, uninterrupted):
  workdir = tmp_path / "killed"
  command = ("stages.baseline", f"--workdir={workdir}", EPOCHS, *BASELINE)
  proc = _stage(*command)
  _wait_for(lambda: _mid_run(workdir), proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=30)
  assert proc.returncode == -signal.SIGKILL
  assert not list(workdir.glob("runs/*/result.json"))
  killed_at = checkpointing.StepCheckpoint(
      next(workdir.glob(f"runs/*/{checkpointing.STATE_FILE}")).parent, list).saved_position()

  out = _finish(_stage(*command))
  assert f"resuming from" in out and f"epoch {killed_at.epoch + 1}, step" in out, out[-2000:]
  _assert_same_run(workdir, uninterrupted)


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


def test_shards_and_work_queue_workers_started_together_label_each_teacher_once(tmp_path):
  """Two shards of stage 3 and a work-queue worker start at once on one workdir: every
  teacher the runs read from the cache is labelled by exactly one of them (each pass is
  claimed), and every run is trained by exactly one."""
  workdir = tmp_path / "shared"
  common = (f"--workdir={workdir}", "--preset=smoke", "--epochs=2")
  procs = [_stage("stages.distill", *common, "--num_shards=2", f"--shard_index={i}")
           for i in (0, 1)] + [_stage("stages.distill", *common, "--work_queue")]
  outs = [_finish(p) for p in procs]
  passes = [m for out in outs for m in re.findall(r"\[teacher \d+/\d+\] (\S+) labelled", out)]
  labelled = sorted(p.name for p in (workdir / "labels").iterdir()
                    if (p / "_COMPLETE.json").is_file())
  assert labelled and sorted(passes) == labelled, (passes, labelled)
  table = results.read_rows([workdir])
  trained = [m for out in outs for m in re.findall(r"\[distill \d+/\d+\] (\S+): ok f1=", out)]
  students = table.loc[table["stage"].isin(["distill", "baseline"]), "run_id"]
  assert sorted(trained) == sorted(students), (trained, table["stage"].value_counts())
  assert len(trained) == len(set(trained)) >= 4 and table["run_id"].is_unique
  assert len({p.pid for p in procs}) == 3 and all(
      re.search(r"\[distill \d+/\d+\]", out) for out in outs[:2]), "a shard trained nothing"


# ---- kills at any moment of a write -------------------------------------------------------------

_WRITER = r'''
import sys, numpy as np, pandas as pd, keras
from simclr_distill import checkpointing, fileio, results
workdir = sys.argv[1]
version = int(sys.argv[2])
model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(512), keras.layers.Dense(1)])
model.compile(optimizer="adam")
state = checkpointing.StepCheckpoint(workdir, lambda: checkpointing.training_variables(model))
state.set_model(model)
print("ready", flush=True)
while True:
  version += 1
  row = {"run_id": "r", "stage": "distill", "status": "ok", "f1": float(version),
         "error": "x" * 2_000_000}  # Big enough that a kill lands mid-write now and then.
  results.write_row(workdir, row)
  frame = pd.DataFrame({"id": [str(version)] * 300_000, "logit_0": np.float32(version)})
  fileio.atomic_write(f"{workdir}/labels/part.parquet", lambda tmp: frame.to_parquet(tmp))
  fileio.write_json(f"{workdir}/manifest.json", {"version": version, "pad": "y" * 2_000_000})
  for v in model.variables:
    v.assign(np.full(v.shape, version, v.dtype.name if hasattr(v.dtype, "name") else v.dtype))
  state.save(checkpointing.Position(version, 0))
  with fileio.atomic_path(f"{workdir}/student.keras", suffix=".keras") as tmp:
    model.save(tmp)
'''


def _check_complete(workdir: pathlib.Path) -> None:
  """Every file a later run reads is absent or whole: one version throughout."""
  import keras
  import pandas as pd
  if (workdir / "runs/r/result.json").exists():
    table = results.read_rows([workdir])
    assert len(table) == 1 and table.loc[0, "error"] == "x" * 2_000_000
  if (workdir / "labels/part.parquet").exists():
    frame = pd.read_parquet(workdir / "labels/part.parquet")
    assert len(frame) == 300_000 and frame["logit_0"].nunique() == 1
  if (workdir / "manifest.json").exists():
    from simclr_distill import fileio
    assert len(fileio.read_json(workdir / "manifest.json")["pad"]) == 2_000_000
  if (workdir / checkpointing.STATE_FILE).exists():
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(512), keras.layers.Dense(1)])
    model.compile(optimizer="adam")
    state = checkpointing.StepCheckpoint(workdir, lambda: checkpointing.training_variables(model))
    state.set_model(model)
    position = state.restore()
    assert all(np.all(v.numpy() == position.epoch) for v in model.trainable_variables)
  if (workdir / "student.keras").exists():
    weights = keras.models.load_model(workdir / "student.keras").get_weights()
    assert len({float(w.flat[0]) for w in weights}) == 1 and all(np.all(w == w.flat[0]) for w in weights)


def test_sigkill_at_random_moments_of_writing_never_leaves_a_half_written_file(tmp_path):
  rng = np.random.default_rng(0)
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
  for attempt in range(5):
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(100 * attempt)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []
    while not lines or lines[-1].strip() != "ready":
      lines.append(proc.stdout.readline())
      assert lines[-1], "the writer died before writing: " + "".join(lines)[-3000:]
    time.sleep(rng.uniform(0.2, 2.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read()[-2000:]
    _check_complete(tmp_path)
  # A killed write leaves its temporary file under a hidden name no reader matches: cached
  # logits are read as *.parquet, rows as runs/*/result.json, the rest by exact name. (Keras
  # needs ".keras" at the end of a model's temporary name; nothing globs for it.)
  leftovers = [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
  assert all(p.name.startswith(".") for p in leftovers)
  assert not [p for p in leftovers if p.name.endswith((".json", ".parquet", ".npz"))]


# ---- bad inputs: a message naming the thing and what to do, exit status 2, nothing written -------

import errno
import shutil

from simclr_distill import fileio, labelling, teachers
from simclr_distill.data import records


def _explained(fn, capsys) -> str:
  """Runs `fn` as a stage would; returns the message of its exit with status 2."""
  from stages import common as stage_common
  with pytest.raises(SystemExit) as exit_info:
    stage_common.run_or_explain(fn)
  assert exit_info.value.code == 2
  return capsys.readouterr().err


def _copy_data(data, tmp_path) -> records.PreparedData:
  root = tmp_path / "data"
  shutil.copytree(data.root, root)
  return records.PreparedData.open(root)


def _train(ctx, *runs):
  return loop.train_runs(list(runs), ctx, "faults")


def test_corrupt_and_truncated_shards_are_named(data, tmp_path, capsys):
  bad = _copy_data(data, tmp_path)
  first, second = (bad.root / s for s in bad.shards)
  first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])  # truncated
  flipped = bytearray(second.read_bytes())
  flipped[len(flipped) // 3] ^= 0xFF  # one corrupt byte: its record's CRC fails
  second.write_bytes(bytes(flipped))
  ctx = _context(bad, tmp_path / "work")
  message = _explained(lambda: _train(ctx, _run(bad)), capsys)
  assert "corrupt or truncated TFRecord shard(s)" in message
  assert bad.shards[0] in message and bad.shards[1] in message and "truncated record" in message
  assert "stages.prepare" in message
  assert not list((tmp_path / "work").glob("runs/*/result.json"))


def test_nan_pixels_are_named_by_example_id(data, tmp_path, capsys):
  bad = _copy_data(data, tmp_path)
  shard = bad.root / bad.shards[0]
  raw = [r.numpy() for r in tf.data.TFRecordDataset(str(shard))]
  train = set(bad.splits("basic")["train_100"])
  examples = [tf.train.Example.FromString(r) for r in raw]
  ids = [e.features.feature["id"].bytes_list.value[0].decode() for e in examples]
  index = next(i for i, example_id in enumerate(ids) if example_id in train)
  victim, example = ids[index], examples[index]
  image = np.frombuffer(example.features.feature["image"].bytes_list.value[0], "<f4").copy()
  image[5] = np.nan
  example.features.feature["image"].bytes_list.value[0] = image.astype("<f4").tobytes()
  raw[index] = example.SerializeToString()
  with tf.io.TFRecordWriter(str(shard)) as writer:
    for record in raw:
      writer.write(record)
  ctx = _context(bad, tmp_path / "work")
  message = _explained(lambda: _train(ctx, _run(bad, early_stopping=False)), capsys)
  assert "NaN/inf pixels" in message and victim in message, message
  assert not list((tmp_path / "work").glob("runs/*/result.json"))


def test_a_diverging_run_is_recorded_failed_and_the_matrix_goes_on(data, tmp_path):
  ctx = _context(data, tmp_path)
  diverging = _run(data, optimizer="sgd", learning_rate=1e30, epochs=2, early_stopping=False)
  fine = _run(data, epochs=1)
  _train(ctx, diverging, fine)
  table = results.read_rows([tmp_path]).set_index("run_id")
  assert table.loc[diverging.run_id, "status"] == "failed"
  assert "non-finite" in table.loc[diverging.run_id, "error"]
  assert table.loc[fine.run_id, "status"] == "ok"
  assert pd_isna(table.loc[diverging.run_id, "checkpoint"])  # no model is offered for a failure


def pd_isna(value) -> bool:
  import pandas as pd
  return bool(pd.isna(value))


def test_disk_full_while_writing_keeps_every_file_whole_and_the_rerun_finishes(
    data, tmp_path, capsys, monkeypatch):
  ctx = _context(data, tmp_path, every_steps=4)
  run = _run(data)
  real_fsync = os.fsync
  writes = []

  def full_after_some_writes(fd):
    writes.append(fd)
    if len(writes) > 6:  # A few checkpoints succeed, then the disk fills.
      raise OSError(errno.ENOSPC, "No space left on device")
    real_fsync(fd)

  monkeypatch.setattr(os, "fsync", full_after_some_writes)
  message = _explained(lambda: _train(ctx, run), capsys)
  assert "no space left on the device" in message and "rerun the same command" in message
  monkeypatch.setattr(os, "fsync", real_fsync)
  run_dir = tmp_path / "runs" / run.run_id
  assert not results.is_done(tmp_path, run.run_id)
  assert not list(run_dir.glob(".*.tmp*"))  # the half-written file was removed
  saved = checkpointing.StepCheckpoint(run_dir, list).saved_position()
  assert saved is not None and saved.epoch + saved.step > 0  # the last whole checkpoint stands
  _train(_context(data, tmp_path, every_steps=4), run)
  assert results.read_row(tmp_path, run.run_id)["status"] == "ok"


def test_empty_split_is_refused_before_training(data, tmp_path, capsys):
  bad = _copy_data(data, tmp_path)
  (split_file,) = bad.root.glob("splits/basic/train_100*")
  split_file.write_text("")
  ctx = _context(bad, tmp_path / "work")
  message = _explained(lambda: _train(ctx, _run(bad)), capsys)
  assert "training set is empty" in message and "split lists" in message


def test_a_results_table_of_a_newer_schema_is_refused(tmp_path, capsys):
  results.write_row(tmp_path, {"run_id": "r", "stage": "distill", "status": "ok"})
  row = fileio.read_json(results.row_path(tmp_path, "r"))
  fileio.write_json(results.row_path(tmp_path, "r"), {**row, "schema_version": 99})
  message = _explained(lambda: results.consolidate(tmp_path), capsys)
  assert "newer than this code's" in message and "upgrade simclr_distill" in message
  assert not (tmp_path / results.TABLE_PARQUET).exists()


def test_label_cache_with_nan_logits_is_refused(tmp_path):
  directory = labelling.cache_dir(tmp_path, "t")
  directory.mkdir(parents=True)
  import pandas as pd
  pd.DataFrame({"id": ["a", "b"], "logit_0": [0.5, np.inf]}).to_parquet(directory / "p.parquet")
  fileio.write_json(directory / labelling.COMPLETE, {})
  with pytest.raises(ValueError, match=r"NaN/inf logits for 1 example\(s\) \(e.g. b\); delete"):
    labelling.load_cached_logits(tmp_path, "t")


# -- teachers ---------------------------------------------------------------------------------------

def _save(model, path):
  model.save(path)
  return path


def _teacher_file(tmp_path, name, shape=(8, 8, 1), activation=None, nan=False, lam=False):
  import keras
  inputs = keras.Input(shape)
  x = keras.layers.Flatten()(inputs)
  if lam:
    x = keras.layers.Lambda(lambda t: t * 2.0)(x)
  out = keras.layers.Dense(1, activation=activation)(x)
  model = keras.Model(inputs, out)
  if nan:
    model.layers[-1].kernel.assign(np.full(model.layers[-1].kernel.shape, np.nan, np.float32))
  return _save(model, tmp_path / f"{name}.keras")


@pytest.mark.parametrize("case,expected", [
    ("missing", "no checkpoint at"),
    ("unreadable", "cannot load"),
    ("size", "expects inputs of shape 16x16x1 but the data has 8x8x1"),
    ("bands", "expects inputs of shape 8x8x3 but the data has 8x8x1"),
    ("probabilities", "declared to output logits but its last layer gives probabilities"),
    ("nan", "gives NaN/inf outputs on the data"),
    ("lambda", "Lambda layer (Python code), which Keras safe mode refuses to load; if you trust "
               "the file, rerun with --unsafe_load"),
])
def test_bad_teachers_are_refused_with_what_to_do(data, tmp_path, capsys, case, expected):
  path = {
      "missing": lambda: tmp_path / "gone.keras",
      "unreadable": lambda: (tmp_path / "junk.keras").write_bytes(b"not a zip") and tmp_path / "junk.keras",
      "size": lambda: _teacher_file(tmp_path, "size", shape=(16, 16, 1)),
      "bands": lambda: _teacher_file(tmp_path, "bands", shape=(8, 8, 3)),
      "probabilities": lambda: _teacher_file(tmp_path, "p", activation="sigmoid"),
      "nan": lambda: _teacher_file(tmp_path, "nan", nan=True),
      "lambda": lambda: _teacher_file(tmp_path, "lam", lam=True),
  }[case]()
  entry = teachers.TeacherEntry(teacher_id=case, labeling="basic", split_percent=100,
                                path=str(path), output="logits")
  sample = next(iter(data.examples().batch(16)))["image"].numpy()
  message = _explained(lambda: teachers.load_teacher(
      entry, tmp_path, image_shape=data.image_shape, num_outputs=1, sample=sample), capsys)
  assert expected in message and repr(case) in message or case == "lambda" and expected in message


def test_unsafe_load_loads_a_trusted_lambda_teacher_and_warns(data, tmp_path, caplog):
  entry = teachers.TeacherEntry(teacher_id="lam", labeling="basic", split_percent=100,
                                path=str(_teacher_file(tmp_path, "lam", lam=True)), output="logits")
  with pytest.warns(UserWarning, match="safe_mode=False"):
    teacher = teachers.load_teacher(entry, tmp_path, image_shape=data.image_shape, num_outputs=1,
                                    safe_mode=False)
  assert teacher.model.output.shape[-1] == 1
  assert "safe mode off" in caplog.text


@pytest.mark.parametrize("flag,expected", [
    ("--archs=NoSuchNet", "NoSuchNet"),
    ("--optimizers=lars", "lars"),
    ("--strategy=bogus", "bogus"),
    ("--checkpoint_steps=-5", "checkpoint_steps=-5 must be >= 0"),
])
def test_unknown_flag_values_exit_non_zero_naming_the_value(tmp_path, flag, expected):
  proc = _stage("stages.baseline", f"--workdir={tmp_path}", "--preset=smoke", flag)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode != 0 and expected in out, out[-2000:]
  assert not list(tmp_path.glob("runs/*/result.json"))
