"""What a person follows while the study trains: the log lines at each verbosity, the progress
lines with their rates and ETAs, and each run's TensorBoard event files (read back and
compared with its history.csv, also after a kill and a resume)."""

import json
import logging
import re
import warnings

import h5py
import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from simclr_distill import checkpointing, results, study_config
from simclr_distill import teachers as T
from simclr_distill.data import digits
from simclr_distill.matrix import RunSpec
from simclr_distill.steps import pretrain as pretrain_step
from simclr_distill.training import context, executor, progress, summaries
from tests.test_stages import stage

EPOCH_LINE = re.compile(r" epoch \d+/\d+: ")


def scalars(directory) -> dict[str, list[tuple[int, float]]]:
  """Every scalar of the event files in `directory`, by tag: [(step, value)] in file order."""
  out: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(directory.glob("events.*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
  return out


def assert_events_match_history(run_dir) -> dict[str, list[tuple[int, float]]]:
  """The run's TensorBoard scalars hold each epoch once, with history.csv's values; returns
  the training scalars."""
  history = pd.read_csv(run_dir / executor.HISTORY)
  board = run_dir / summaries.DIRECTORY
  train = scalars(board / "train")
  epochs = list(range(len(history)))
  assert [step for step, _ in train["epoch_loss"]] == epochs, run_dir.name
  np.testing.assert_allclose([v for _, v in train["epoch_loss"]], history["loss"], rtol=1e-6)
  assert [step for step, _ in train["epoch_learning_rate"]] == epochs
  assert all(np.isfinite(v) and v >= 0 for _, v in train["epoch_learning_rate"])
  if "val_loss" in history and history["val_loss"].notna().all():
    validation = scalars(board / "validation")
    assert [step for step, _ in validation["epoch_loss"]] == epochs, run_dir.name
    np.testing.assert_allclose([v for _, v in validation["epoch_loss"]], history["val_loss"],
                               rtol=1e-6)
    steps = [step for step, _ in validation["evaluation_loss_vs_iterations"]]
    assert steps == sorted(set(steps)) and len(steps) == len(history)  # Optimizer steps.
  return train


def test_every_run_of_the_study_writes_its_epochs_to_tensorboard(smoke_study):
  workdir, _ = smoke_study
  table = pd.read_parquet(workdir / results.TABLE_PARQUET)
  trained = table[table["stage"].isin(["finetune", "distill", "baseline"])]
  for run_id in trained["run_id"]:
    assert_events_match_history(workdir / results.RUNS / run_id)
  # Stage 1's SimCLR run: its training loss and rate (no validation).
  train = assert_events_match_history(workdir / "pretrain" / "digits_adam")
  assert set(train) == {"epoch_loss", "epoch_learning_rate"}
  boards = sorted(p.relative_to(workdir).parts[:2] for p in workdir.rglob("events.*"))
  assert len({b for b in boards if b[0] == results.RUNS}) == len(trained)


def test_the_studys_log_shows_runs_and_the_study_not_epochs(smoke_study):
  _, proc = smoke_study
  log = proc.stderr
  assert not EPOCH_LINE.search(log) and "early stopping at" not in log
  runs = re.findall(r"\[(?:finetune|distill|baseline) \d+/\d+\] \S+: ok f1=.*", log)
  shape = (r"\d+/\d+ epochs(?:, stopped early, best \d+)?; [\d.e+]+ steps/s, \d+ images/s\); "
           r"\d+ left, ETA \d+")
  assert len(runs) == 10 and all(re.search(shape, line) for line in runs), runs
  assert re.search(r"pretrained digits_adam: 2 epochs on \d+ examples in .* steps/s", log)
  assert "study: 15 units of work to do: pretrain 1 encoder, finetune 4 runs, label 4 teacher " \
         "passes, distill 4 runs, baseline 2 runs" in log
  assert re.search(r"study: 5/15 units of work done, .* elapsed \(pretrain 1/1, finetune 4/4, "
                   r"label 0/4, distill 0/4, baseline 0/2\); ETA ~", log)
  assert "study: 15/15 units of work done" in log
  assert "labelled records/" not in log  # Per shard: debug output.
  assert len(log.splitlines()) < 80
  # TensorFlow's native start-up lines are left out (common.import_tensorflow_quietly).
  assert "absl::InitializeLog" not in log and "oneDNN custom operations" not in log


def test_epoch_lines_show_with_verbosity_1(tmp_path):
  proc = stage("stages.pretrain", "--preset=smoke", f"--workdir={tmp_path}", "-v=1")
  lines = [line for line in proc.stderr.splitlines() if EPOCH_LINE.search(line)]
  assert [re.search(r"epoch \d+/\d+", line).group() for line in lines] == ["epoch 1/2", "epoch 2/2"]
  assert all("pretrain digits_adam" in line and "loss=" in line for line in lines)


def _clocked(times):
  it = iter(times)
  return lambda: next(it)


def test_epoch_progress_logs_rate_and_etas_at_most_once_an_interval(caplog):
  # A resumed epoch: steps 1-100 were done; the first batch end (step 101) marks the start.
  # Then a batch end every second: 101 at t=10, 102 at t=11, ...
  clock = _clocked([0.0] + [10.0 + i for i in range(200)])
  callback = progress.EpochProgress("run X", epochs=3, steps_per_epoch=1000, interval=60,
                                    clock=clock)
  callback.start_at(checkpointing.Position(1, 100))
  with caplog.at_level(logging.INFO, logger="simclr_distill.training.progress"):
    callback.on_epoch_begin(1)
    for batch in range(150):
      callback.on_train_batch_end(batch)
  lines = [r.getMessage() for r in caplog.records]
  # Due at t=60 (step 151), then t=120 (step 211): 1 step/s; 849 and 1849 steps left.
  assert lines == ["run X epoch 2/3: step 151/1000, 1 steps/s; epoch ETA 14m09s, run ETA ~30m49s",
                   "run X epoch 2/3: step 211/1000, 1 steps/s; epoch ETA 13m09s, run ETA ~29m49s"]


def test_epoch_progress_is_silent_in_short_epochs_and_logs_in_real_training(caplog):
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
  model.compile("sgd", "mse")
  x, y = np.zeros((64, 4), np.float32), np.zeros((64, 1), np.float32)
  quiet = progress.EpochProgress("short", epochs=2, steps_per_epoch=8)  # Default interval.
  eager = progress.EpochProgress("eager", epochs=2, steps_per_epoch=8, interval=0)
  with caplog.at_level(logging.INFO, logger="simclr_distill.training.progress"):
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[quiet, eager])
  assert quiet.lines == 0 and eager.lines == 14  # Every step but each epoch's first.
  assert all(re.fullmatch(r"eager epoch [12]/2: step [2-8]/8, [\d.e+]+ steps/s; epoch ETA \d+ s, "
                          r"run ETA ~\d+ s", r.getMessage()) for r in caplog.records)


def test_study_progress_estimates_from_each_steps_time_per_unit(caplog):
  now = [0.0]
  study = progress.StudyProgress({"pretrain": 1, "finetune": 4, "label": 4, "distill": 6},
                                 interval=1e9, clock=lambda: now[0])
  assert study.describe() == ("study: 15 units of work to do: pretrain 1 encoder, finetune 4 "
                              "runs, label 4 teacher passes, distill 6 runs")
  with progress.tracking(study), caplog.at_level(logging.INFO, "simclr_distill"):
    with study.step("pretrain"):
      progress.planned("encoder", 1)
      progress.done("run", 5.0)  # Not this step's kind of unit: ignored.
      now[0] = 100.0
      progress.done("encoder", 100.0)
    assert study.line().endswith("no ETA until a unit of finetune, label, distill is timed")
    with study.step("finetune"):
      progress.planned("run", 5, finished=1)  # The step's own count replaces the estimate.
      for seconds in (10.0, 30.0):
        now[0] += seconds
        progress.done("run", seconds)
      # 2 finetune runs left at 20 s, 6 distill runs borrowing 20 s; label untimed.
      assert study.eta() == (160.0, ["distill"], ["label"])
      assert study.line() == (
          "study: 4/16 units of work done, 2m20s elapsed (pretrain 1/1, finetune 3/5, label 0/4, "
          "distill 0/6); ETA ~2m40s + label (not timed yet) (an estimate from each step's mean "
          "time per unit so far; distill at the other training steps')")
  # A step's end logs a line (interval aside) and ends its count at what was done.
  assert [r.getMessage().split(" elapsed")[0] for r in caplog.records] == [
      "study: 1/15 units of work done, 1m40s", "study: 4/14 units of work done, 2m20s"]
  assert progress.duration(3 * 86400 + 4 * 3600) == "3d04h" and progress.duration(7200) == "2h00m"


def test_study_progress_logs_a_steps_last_line_once(caplog):
  study = progress.StudyProgress({"distill": 2, "baseline": 1}, interval=0)
  with progress.tracking(study), caplog.at_level(logging.INFO, "simclr_distill"):
    with study.step("distill"):
      progress.planned("run", 2)
      progress.done("run", 1.0)
      progress.done("run", 1.0)
    with study.step("baseline"):
      progress.planned("run", 2, finished=1)  # One more than expected, one done before.
      progress.done("run", 2.0)
  lines = [r.getMessage() for r in caplog.records]
  assert [line.split(",")[0] for line in lines] == [
      "study: 1/3 units of work done", "study: 2/3 units of work done",
      "study: 4/4 units of work done"]
  assert "ETA ~2 s (an estimate" in lines[0] and "ETA" not in lines[-1]


@pytest.fixture(scope="module")
def digits_data(tmp_path_factory):
  return digits.prepare_digits(tmp_path_factory.mktemp("data"), num_shards=2, percents=(100,))


class _Killed(Exception):
  pass


def test_a_killed_and_resumed_run_logs_each_epoch_once(digits_data, tmp_path, monkeypatch):
  """Killed after epoch 3 logged its history and summaries but before its checkpoint (the
  state on disk is 5 steps into epoch 3): the resumed run trains the rest of epoch 3, then
  4 and 5, and each epoch appears once, at its index, with the history's values."""
  data = digits_data
  policy = checkpointing.CheckpointPolicy(every_steps=5, every_minutes=0)
  ctx = context.RunContext(workdir=tmp_path, data=data, strategy=tf.distribute.get_strategy(),
                           checkpoint=policy)
  run = RunSpec(stage="baseline", arch="mlp", labeling="basic", split_percent=100,
                optimizer="sgd", learning_rate=0.05, seed=0, protocol="holdout", task="binary",
                epochs=5, batch_size=16, early_stopping=True, patience=10,
                monitor="val_label_loss", head="pooled", dropout=0.0, width=16,
                dataset=data.fingerprint())
  original = executor.ProgressLogger.on_epoch_end

  def killed_after_epoch_3(self, epoch, logs=None):
    original(self, epoch, logs)
    if epoch == 2:
      raise _Killed()

  monkeypatch.setattr(executor.ProgressLogger, "on_epoch_end", killed_after_epoch_3)
  with pytest.raises(_Killed):
    executor.execute_run(run, ctx)
  run_dir = tmp_path / results.RUNS / run.run_id
  saved = checkpointing.StepCheckpoint(run_dir, list).saved_position()
  assert saved.epoch == 2 and saved.step > 0  # Mid-epoch: the rest of epoch 3 is redone.
  assert [s for s, _ in scalars(run_dir / "tensorboard" / "train")["epoch_loss"]] == [0, 1, 2]
  monkeypatch.setattr(executor.ProgressLogger, "on_epoch_end", original)
  row = executor.execute_run(run, ctx)
  assert row["status"] == "ok" and row["epochs_run"] == 5
  assert_events_match_history(run_dir)
  # A fresh start of the run (no checkpoint) begins new event files.
  (run_dir / results.ROW_FILE).unlink()
  executor.execute_run(run, ctx)
  assert_events_match_history(run_dir)


def test_aligning_drops_what_followed_the_checkpoint_and_a_torn_last_record(tmp_path):
  writer = tf.summary.create_file_writer(str(tmp_path / "train"))
  with writer.as_default():
    for epoch in range(4):  # 10 steps an epoch: iterations 10, 20, 30, 40.
      tf.summary.scalar("epoch_loss", 1.0 / (epoch + 1), step=epoch)
      tf.summary.scalar("evaluation_loss_vs_iterations", 2.0, step=10 * (epoch + 1))
  writer.close()
  path = next((tmp_path / "train").glob("events.*"))
  path.write_bytes(path.read_bytes()[:-7])  # A kill mid-write.
  # The checkpoint is 4 steps into epoch 3 (index 2): epochs 0 and 1 stay.
  dropped = summaries.align_events(tmp_path, checkpointing.Position(2, 4), steps_per_epoch=10)
  kept = scalars(tmp_path / "train")
  assert kept == {"epoch_loss": [(0, 1.0), (1, 0.5)],
                  "evaluation_loss_vs_iterations": [(10, 2.0), (20, 2.0)]}
  assert dropped == 3 + 1  # Epoch 2's two and epoch 3's first, then its torn second.
  assert summaries.align_events(tmp_path, checkpointing.Position(2, 4), 10) == 0


def test_the_learning_rate_logged_follows_the_schedule(digits_data, tmp_path):
  """Stage 1's SGD decays its rate by a cosine: the rate logged after each epoch is the
  schedule's at that epoch's last step."""
  cfg = study_config.PretrainConfig(name="lr", arch="mlp", width=16, optimizer="sgd",
                                    learning_rate=0.05, temperature=0.5, batch_size=256,
                                    epochs=3, policy="affine")
  path = pretrain_step.run_pretraining(cfg, digits_data, tmp_path, probe=None)
  steps = json.loads((path.parent / "config.json").read_text())["pool"] // 256
  rates = [v for _, v in assert_events_match_history(path.parent)["epoch_learning_rate"]]
  schedule = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=3 * steps)
  np.testing.assert_allclose(rates, [float(schedule((e + 1) * steps)) for e in range(3)],
                             rtol=1e-5)
  assert rates[0] > rates[1] > rates[2]


def _keras2_h5(path):
  """A one-input model saved as a Keras 2 `.h5` file records it: its input as a list."""
  keras.utils.set_random_seed(3)
  inputs = keras.Input((8, 8, 1), name="image")
  outputs = keras.layers.Dense(1, name="logits")(keras.layers.Flatten()(inputs))
  model = keras.Model(inputs, outputs)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Keras' advice against the legacy format.
    model.save(path)
  with h5py.File(path, "r+") as f:
    config = json.loads(f.attrs["model_config"])
    for key in ("input_layers", "output_layers"):
      config["config"][key] = [config["config"][key]]
    f.attrs["model_config"] = json.dumps(config)
  return model


def test_a_keras2_h5_teacher_runs_without_the_input_structure_warning(tmp_path):
  model = _keras2_h5(tmp_path / "t.h5")
  images = np.random.default_rng(0).random((8, 8, 8, 1), dtype=np.float32)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    keras.models.load_model(tmp_path / "t.h5", compile=False)(images)
  assert any("structure of `inputs` doesn't match" in str(w.message) for w in caught)
  entry = T.TeacherEntry("t", "basic", 10, "t.h5", output="logits")
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for fold in (True, False):
      teacher = T.load_teacher(entry, tmp_path, image_shape=(8, 8, 1), num_outputs=1,
                               sample=images, fold_batchnorm=fold)
      logits = np.asarray(teacher.logits(images))
      predicted = teacher.predict_logits(tf.data.Dataset.from_tensor_slices(images).batch(4))
  assert not [str(w.message) for w in caught if "structure" in str(w.message)]
  np.testing.assert_allclose(logits, np.asarray(model(images)), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(predicted, logits, rtol=1e-5, atol=1e-6)
