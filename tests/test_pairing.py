"""Seed-paired runs: a run's initial student, data order and training depend only on its seed
and settings, never on its teacher's file format, its teaching mode or what was loaded before."""

import dataclasses

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from simclr_distill import labelling, matrix, scoring
from simclr_distill import config as C
from simclr_distill import teachers as T
from simclr_distill.data import digits, records
from simclr_distill.training import context, executor, networks, rundata

FORMATS = {"keras": "t.keras", "h5": "t.h5", "savedmodel": "t_savedmodel"}


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
  """Digits data, one teacher saved as .keras, .h5 and SavedModel, and its label caches."""
  root = tmp_path_factory.mktemp("pairing")
  digits.prepare_digits(root / "data", percents=(10, 100), num_shards=2)
  data = records.PreparedData.open(root / "data")
  keras.utils.set_random_seed(11)
  inputs = keras.Input((8, 8, 1), name="image")
  x = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))
  teacher = keras.Model(inputs, keras.layers.Dense(1, name="logits")(x))
  zoo = root / "zoo"
  zoo.mkdir()
  teacher.save(zoo / FORMATS["keras"])
  teacher.save(zoo / FORMATS["h5"])
  teacher.export(str(zoo / FORMATS["savedmodel"]), verbose=False)
  entries = {name: T.TeacherEntry(name, "basic", 10, path, output="logits")
             for name, path in FORMATS.items()}
  T.write_zoo(zoo, list(entries.values()))
  ctx = context.RunContext(workdir=root / "w", data=data, strategy=tf.distribute.get_strategy(),
                           zoo_dir=zoo, shuffle_buffer=512, reuse_models=0)
  for entry in entries.values():
    loaded = T.load_teacher(entry, zoo, image_shape=(8, 8, 1), num_outputs=1)
    labelling.label_with_teacher(loaded, entry.resolve(zoo), data, ctx.labels_dir)
  return ctx, entries


def _run(entry, mode, epochs=2):
  return matrix.RunSpec(
      stage="distill", arch="mlp", labeling="basic", split_percent=10, optimizer="adam",
      learning_rate=1e-3, seed=7, protocol="holdout", task="binary", epochs=epochs,
      batch_size=64, early_stopping=False, patience=1, monitor="val_label_loss", head="pooled",
      dropout=0.25, width=32, dataset="d", teacher=entry, teacher_mode=mode,
      loss=C.LossConfig(kind="hard"), pool_balance="none")


def _disturb_random_state(i):
  """What a process does between runs: load or build models, which draws from the global
  random state."""
  keras.utils.set_random_seed(100 + i)
  for _ in range(i + 1):
    keras.layers.Dense(4).build((None, 3))


def test_offline_and_online_runs_start_from_identical_students_for_every_teacher_format(setting):
  ctx, entries = setting
  initial = {}
  for i, (name, entry) in enumerate(entries.items()):
    for mode in ("offline", "online"):
      _disturb_random_state(i)
      _, student, teacher, _ = networks.build_run_model(_run(entry, mode), ctx, steps=10,
                                                        offline=mode == "offline")
      assert (teacher is None) == (mode == "offline")
      initial[name, mode] = [np.array(w) for w in student.get_weights()]
  first = initial["keras", "offline"]
  for key, weights in initial.items():
    assert len(weights) == len(first)
    for a, b in zip(weights, first):
      np.testing.assert_array_equal(a, b, err_msg=f"{key} starts elsewhere than keras/offline")


def test_offline_and_online_runs_train_identically_when_the_arithmetic_is(setting):
  """Hard pseudo-labels from the cache or from the teacher in the step are the same labels,
  so the student's steps are the same arithmetic on the same batches: same weights, same
  history, same test predictions."""
  ctx, entries = setting
  finished = {}
  for i, mode in enumerate(("offline", "online")):
    _disturb_random_state(i)
    run = _run(entries["h5"], mode)
    row = executor.execute_run(run, ctx)
    assert row["status"] == "ok"
    run_dir = ctx.workdir / "runs" / run.run_id
    finished[mode] = (keras.models.load_model(run_dir / "student.keras").get_weights(),
                      pd.read_csv(run_dir / "history.csv"),
                      pd.read_parquet(run_dir / "predictions.parquet"))
  (w_off, h_off, p_off), (w_on, h_on, p_on) = finished["offline"], finished["online"]
  for a, b in zip(w_off, w_on):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(h_off["loss"], h_on["loss"], rtol=1e-6)
  np.testing.assert_allclose(p_off["student_logit"], p_on["student_logit"], rtol=1e-5, atol=1e-6)
  assert not np.allclose(w_off[0], networks.build_run_model(
      _run(entries["h5"], "offline"), ctx, steps=10, offline=True)[1].get_weights()[0])  # It trained.


def test_a_model_that_predicts_one_class_everywhere_is_flagged_as_collapsed(setting):
  ctx, entries = setting
  run = dataclasses.replace(_run(entries["keras"], "offline"), early_stopping=True)
  datasets = rundata.RunDatasets(run, ctx, labelling.load_teacher_logits(ctx.labels_dir, run.teacher))
  inputs = keras.Input((8, 8, 1), name="image")
  constant = keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="zeros",
                                                    bias_initializer="ones")(
      keras.layers.Flatten()(inputs)))
  frame = scoring.predict_test(constant, datasets, None)
  assert scoring.collapsed_lists(constant, datasets, frame) == "val+test"
  # Ink above the median: a crude model, but one that gives both classes on both lists.
  ink = np.median([ex["image"].numpy().sum() for ex in ctx.data.examples(datasets.test_ids)])
  separating = keras.Model(inputs, keras.layers.Dense(
      1, kernel_initializer="ones", bias_initializer=keras.initializers.Constant(-ink))(
          keras.layers.Flatten()(inputs)))
  frame = scoring.predict_test(separating, datasets, None)
  assert scoring.collapsed_lists(separating, datasets, frame) == ""
