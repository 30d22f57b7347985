"""The Distiller: offline and online teaching agree, and MirroredStrategy matches one device."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simclr_distill import losses
from simclr_distill.teachers import Teacher, TeacherEntry
from simclr_distill.training import context, distiller, executor, rundata, runtime

N, BATCH = 64, 16


def _net(seed, units=1):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((8, 8, 1), name="image")
  x = keras.layers.Flatten()(inputs)
  x = keras.layers.Dense(16, activation="relu")(x)
  return keras.Model(inputs, keras.layers.Dense(units, name="logits")(x))


def _data(teacher_model, with_teacher):
  rng = np.random.default_rng(0)
  x = rng.random((N, 8, 8, 1), dtype=np.float32)
  targets = {"label": (rng.random(N) > 0.5).astype(np.float32),
             "mask": (np.arange(N) % 4 == 0).astype(np.float32)}
  if with_teacher:
    targets["teacher"] = np.asarray(teacher_model(x), np.float32)
  return tf.data.Dataset.from_tensor_slices((x, targets)).batch(BATCH, drop_remainder=True)


def _train(strategy, *, online, kind="soft_kl", alpha=0.3, initial=None):
  teacher_model = _net(1)
  with strategy.scope():
    student = _net(2)
    if initial is not None:
      student.set_weights(initial)
    teacher = Teacher(TeacherEntry("t", "basic", 1, "t.keras"), _net(1), "logits") if online else None
    model = distiller.Distiller(student, task="binary", loss_kind=kind, temperature=2.0, alpha=alpha,
                                teacher=teacher)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
  history = model.fit(_data(teacher_model, not online), epochs=3, verbose=0, shuffle=False)
  return student.get_weights(), history.history


def test_offline_cached_logits_and_online_teacher_train_identically():
  offline, h_off = _train(tf.distribute.get_strategy(), online=False)
  online, h_on = _train(tf.distribute.get_strategy(), online=True)
  for a, b in zip(offline, online):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(h_off["loss"], h_on["loss"], rtol=1e-5)
  np.testing.assert_allclose(h_off["distill_loss"], h_on["distill_loss"], rtol=1e-5)


def test_loss_is_the_pure_function_of_the_batch():
  student, teacher = _net(2), _net(1)
  x, targets = next(iter(_data(teacher, True)))
  model = distiller.Distiller(student, task="binary", loss_kind="hard", alpha=0.25)
  got = model.compute_loss(x, targets, student(x))
  want = losses.distillation_loss(targets["teacher"], student(x), targets["label"], targets["mask"],
                                  task="binary", kind="hard", alpha=0.25)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-6)


def test_build_strategy_mirrors_over_the_logical_cpus(mirrored_strategy):
  # Only inspected, never used: a second strategy's collectives would clash with the shared one.
  assert runtime.build_strategy("mirrored").num_replicas_in_sync == 2


def test_mirrored_strategy_over_two_cpus_matches_a_single_device(mirrored_strategy):
  mirrored = mirrored_strategy
  assert mirrored.num_replicas_in_sync == 2
  initial = _net(2).get_weights()
  # alpha=0 and a plain batch mean: the global loss is the mean of the replicas' halves.
  single, h1 = _train(tf.distribute.get_strategy(), online=False, alpha=0.0, initial=initial)
  multi, h2 = _train(mirrored, online=False, alpha=0.0, initial=initial)
  for a, b in zip(single, multi):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(h1["loss"], h2["loss"], rtol=1e-4)
  assert not np.allclose(single[0], initial[0])  # it trained


def test_strategy_names():
  assert runtime.build_strategy("default").num_replicas_in_sync == 1
  assert runtime.build_strategy("auto").num_replicas_in_sync == 1  # no GPUs here
  with pytest.raises(ValueError, match="unknown strategy 'gpu'"):
    runtime.build_strategy("gpu")


def test_teacher_balanced_pool_draws_each_teacher_class_equally(tmp_path):
  from simclr_distill.data import digits
  from simclr_distill.matrix import RunSpec

  data = digits.prepare_digits(tmp_path / "data", num_shards=2, percents=(10, 100))
  ctx = context.RunContext(workdir=tmp_path, data=data, strategy=tf.distribute.get_strategy())
  ids = np.asarray(data.ids())
  logits = np.where(np.arange(len(ids)) % 10 == 0, 3.0, -3.0)[:, None].astype(np.float32)  # 10% positive
  entry = TeacherEntry("t", "basic", 10, "t.keras")
  common = dict(stage="distill", arch="mlp", labeling="basic", split_percent=10, optimizer="adam",
                learning_rate=1e-3, seed=0, protocol="holdout", task="binary", epochs=1, batch_size=100,
                early_stopping=True, patience=1, monitor="val_label_loss", head="pooled", dropout=0.0,
                width=None, dataset=data.fingerprint(), teacher=entry)
  fractions = {}
  for balance in ("teacher", "none"):
    sets = rundata.RunDatasets(RunSpec(pool_balance=balance, **common), ctx, (ids, logits))
    teacher = np.concatenate([t["teacher"].numpy() for _, t in sets.train().take(20)])
    fractions[balance] = float((teacher > 0).mean())
  assert fractions["teacher"] == pytest.approx(0.5, abs=0.05)
  assert fractions["none"] == pytest.approx(0.1, abs=0.03)
  # Test and validation streams are never resampled, and every example counts as labelled.
  test = list(sets.test_examples())
  assert sum(len(b["id"]) for b in test) == len(data.splits("basic")["test"])
  assert all(float(b["mask"].numpy().min()) == 1.0 for b in test)


class _Preempted(Exception):
  pass


def test_a_run_killed_mid_training_resumes_from_its_last_epoch(tmp_path, monkeypatch):
  from simclr_distill import results
  from simclr_distill.data import digits
  from simclr_distill.matrix import RunSpec

  data = digits.prepare_digits(tmp_path / "data", num_shards=2, percents=(100,))
  ctx = context.RunContext(workdir=tmp_path, data=data, strategy=tf.distribute.get_strategy())
  run = RunSpec(stage="baseline", arch="mlp", labeling="basic", split_percent=100, optimizer="adam",
                learning_rate=1e-3, seed=0, protocol="holdout", task="binary", epochs=5, batch_size=32,
                early_stopping=False, patience=1, monitor="val_label_loss", head="pooled",
                dropout=0.0, width=None, dataset=data.fingerprint())
  original = executor.ProgressLogger.on_epoch_end

  def preempt_after_epoch_3(self, epoch, logs=None):
    original(self, epoch, logs)
    if epoch == 2:
      raise _Preempted()

  monkeypatch.setattr(executor.ProgressLogger, "on_epoch_end", preempt_after_epoch_3)
  with pytest.raises(_Preempted):
    executor.execute_run(run, ctx)
  run_dir = tmp_path / "runs" / run.run_id
  assert (run_dir / "training_state.npz").is_file() and not results.is_done(tmp_path, run.run_id)
  monkeypatch.setattr(executor.ProgressLogger, "on_epoch_end", original)
  row = executor.execute_run(run, ctx)
  history = (run_dir / "history.csv").read_text().splitlines()
  assert [line.split(",")[0] for line in history[1:]] == ["0", "1", "2", "3", "4"]
  assert row["epochs_run"] == 5 and row["status"] == "ok"
  assert not (run_dir / "training_state.npz").exists() and results.is_done(tmp_path, run.run_id)


def test_an_epoch_trains_exactly_its_steps_whatever_steps_per_execution(tmp_path, monkeypatch):
  """Keras runs whole executions: compiled with 4 steps per call, an epoch of 1 step trains 4
  (Keras 3.15). A run uses the largest divisor of its steps per epoch instead, so it trains
  exactly epochs x steps and a resumed run skips exactly the batches it trained."""
  from simclr_distill.data import digits
  from simclr_distill.matrix import RunSpec
  from simclr_distill.training import runtime

  assert [runtime.steps_per_execution(4, n) for n in (1, 2, 3, 4, 5, 6, 8, 9)] == [
      1, 2, 3, 4, 1, 3, 4, 3]
  data = digits.prepare_digits(tmp_path / "data", num_shards=2, percents=(10,))
  ctx = context.RunContext(workdir=tmp_path, data=data, strategy=tf.distribute.get_strategy(),
                           steps_per_execution=4)
  run = RunSpec(stage="baseline", arch="mlp", labeling="basic", split_percent=10, optimizer="adam",
                learning_rate=1e-3, seed=0, protocol="holdout", task="binary", epochs=3, batch_size=32,
                early_stopping=False, patience=1, monitor="val_label_loss", head="pooled",
                dropout=0.0, width=None, dataset=data.fingerprint())
  kept = {}
  monkeypatch.setattr(ctx, "keep_warm", lambda key, model: kept.update(model=model))
  row = executor.execute_run(run, ctx)
  assert row["steps_per_epoch"] == 1 and row["steps_per_execution"] == 1
  assert int(kept["model"].optimizer.iterations.numpy()) == 3 * row["steps_per_epoch"]
