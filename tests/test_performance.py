"""The speed paths: vectorised record parsing, one labelling pipeline over many shards,
streaming conversion, mixed precision and XLA. (Speed itself is measured in `benchmarks/`.)"""

import gc
import pathlib
import weakref

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from simclr_distill import labelling, models, results
from simclr_distill.data import bigearthnet, digits
from simclr_distill.matrix import RunSpec
from simclr_distill.teachers import Teacher, TeacherEntry
from simclr_distill.training import context, distiller, executor, runtime


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return digits.prepare_digits(tmp_path_factory.mktemp("perf") / "data", num_shards=3,
                               percents=(10, 100))


def test_batches_parse_like_examples_and_never_span_shards(data):
  by_id = {ex["id"].numpy().decode(): ex["image"].numpy() for ex in data.examples()}
  assert len(by_id) == len(data.ids())
  seen = []
  for batch in data.batches(100, shards=data.shards[::-1], by_shard=True):
    index = int(batch["shard"])
    seen.append(index)
    for example_id, image in zip(batch["id"].numpy().astype(str), batch["image"].numpy()):
      np.testing.assert_array_equal(image, by_id[example_id])
      # The digits demo deals ids round-robin over its shards.
      assert int(example_id.split("-")[1]) % 3 == 2 - index
    assert len(batch["id"]) <= 100
  assert seen == sorted(seen) and set(seen) == {0, 1, 2}  # Shards in the order given.
  wanted = data.ids()[5:40]
  got = [i for b in data.batches(16, wanted) for i in b["id"].numpy().astype(str)]
  assert sorted(got) == sorted(wanted)
  # Only the label fields asked for are parsed (and then cached and shuffled).
  assert set(next(iter(data.batches(16, labels=["class"])))) == {"id", "image", "class"}
  assert set(next(iter(data.batches(16, labels=False)))) == {"id", "image"}
  assert {"label_basic", "label_expanded", "class"} <= set(next(iter(data.examples())))


def test_one_labelling_pass_writes_every_shard_and_matches_the_model(data, tmp_path):
  keras.utils.set_random_seed(0)
  model = models.build_model("mlp", data.image_shape, 1, head="pooled", width=8)
  teacher = Teacher(TeacherEntry("t", "basic", 10, "t.keras"), model, "logits")
  checkpoint = tmp_path / "t.keras"
  checkpoint.write_text("identity")
  directory = labelling.label_with_teacher(teacher, checkpoint, data, tmp_path / "labels",
                                           batch_size=64)
  assert sorted(p.name for p in directory.glob("*.parquet")) == sorted(
      s.split("/")[-1].replace(".tfrecord", ".parquet") for s in data.shards)
  ids, logits = labelling.load_cached_logits(tmp_path / "labels", "t")
  images = {ex["id"].numpy().decode(): ex["image"].numpy() for ex in data.examples()}
  want = model.predict(np.stack([images[i] for i in ids]), verbose=0)
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
  # A lost part is relabelled alone, through the same traced function.
  part = sorted(directory.glob("*.parquet"))[1]
  before = pd.read_parquet(part)
  part.unlink()
  (directory / labelling.COMPLETE).unlink()
  labelling.label_with_teacher(teacher, checkpoint, data, tmp_path / "labels", batch_size=64)
  pd.testing.assert_frame_equal(pd.read_parquet(part), before)


class _Tracked(np.ndarray):
  """An ndarray that can be weakly referenced, to count the patches still alive."""


def test_stream_conversion_holds_no_shard_in_memory(tmp_path):
  alive: list[weakref.ref] = []
  peak = 0

  def patches():
    nonlocal peak
    rng = np.random.default_rng(0)
    for i in range(25):
      gc.collect()
      peak = max(peak, sum(r() is not None for r in alive))
      image = rng.integers(0, 9000, (120, 120, 10), dtype=np.uint16).view(_Tracked)
      alive.append(weakref.ref(image))
      multi_hot = np.zeros(len(bigearthnet.CLASSES), np.int64)
      multi_hot[12 if i % 3 == 0 else 0] = 1
      yield f"P{i:03d}", image, multi_hot

  data = bigearthnet.prepare_from_patches(patches(), tmp_path / "out", source="test",
                                          examples_per_shard=10, percents=(100,))
  assert data.manifest["num_examples"] == 25 and len(data.shards) == 3
  assert peak <= 2, f"{peak} patches alive at once; the converter buffers a shard"


def test_dtype_policy_builds_mixed_networks_and_restores_the_global_policy():
  with runtime.dtype_policy("mixed_bfloat16"):
    model = models.build_model("cnn", (8, 8, 1), 3, head="pooled", width=4)
  assert keras.mixed_precision.global_policy().name == "float32"
  conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
  assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
  out = model(np.zeros((2, 8, 8, 1), np.float32))
  assert out.dtype == "float32"  # Logits stay float32 for the losses.


def test_mixed_float16_training_scales_the_loss():
  with runtime.dtype_policy("mixed_float16"):
    student = models.build_model("mlp", (8, 8, 1), 1, head="pooled", width=8)
    model = distiller.Distiller(student, task="binary", loss_kind="hard")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
  assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
  rng = np.random.default_rng(0)
  x = rng.random((32, 8, 8, 1), dtype=np.float32)
  targets = {"label": np.zeros(32, np.float32), "mask": np.zeros(32, np.float32),
             "teacher": rng.standard_normal((32, 1)).astype(np.float32)}
  history = model.fit(x, targets, batch_size=8, epochs=2, verbose=0).history
  assert np.isfinite(history["loss"]).all() and history["loss"][-1] < history["loss"][0]


def test_training_steps_log_only_losses_and_validation_logs_every_metric():
  student = models.build_model("mlp", (8, 8, 1), 1, head="pooled", width=8)
  model = distiller.Distiller(student, task="binary", loss_kind="soft_kl", alpha=0.0)
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  rng = np.random.default_rng(0)
  x = rng.random((32, 8, 8, 1), dtype=np.float32)
  targets = {"label": rng.integers(0, 2, 32).astype(np.float32), "mask": np.ones(32, np.float32),
             "teacher": rng.standard_normal((32, 1)).astype(np.float32)}
  history = model.fit(x, targets, batch_size=8, epochs=1, verbose=0,
                      validation_data=(x, targets)).history
  assert {"loss", "distill_loss"} <= set(history)
  assert not {"auc", "agreement", "kl", "label_loss"} & set(history)  # overhead per batch
  assert {"val_auc", "val_agreement", "val_kl", "val_label_loss", "val_distill_loss"} <= set(history)
  assert 0.0 <= history["val_agreement"][0] <= 1.0 and history["val_kl"][0] >= 0.0


def test_a_mixed_precision_xla_run_records_its_settings_and_saves_a_plain_keras_model(data, tmp_path):
  ctx = context.RunContext(workdir=tmp_path, data=data, strategy=tf.distribute.get_strategy(),
                           precision="mixed_bfloat16", jit_compile=True, steps_per_execution=2)
  run = RunSpec(stage="baseline", arch="cnn", labeling="basic", split_percent=100, optimizer="adam",
                learning_rate=1e-3, seed=0, protocol="holdout", task="binary", epochs=2,
                batch_size=64, early_stopping=False, patience=1, monitor="val_label_loss",
                head="pooled", dropout=0.0, width=8, dataset=data.fingerprint())
  row = executor.execute_run(run, ctx)
  assert row["status"] == "ok", row.get("error")
  stored = results.read_row(tmp_path, run.run_id)
  assert (stored["dtype_policy"], stored["jit_compile"], stored["steps_per_execution"]) == (
      "mixed_bfloat16", True, 2)
  loaded = keras.models.load_model(row["checkpoint"])
  assert keras.mixed_precision.global_policy().name == "float32"
  out = loaded.predict(np.zeros((4, *data.image_shape), np.float32), verbose=0)
  assert out.dtype == np.float32 and np.isfinite(out).all()


def test_a_run_on_a_reused_traced_model_matches_a_run_on_a_new_one(data, tmp_path):
  spec = dict(stage="baseline", arch="cnn", labeling="basic", split_percent=100, optimizer="adam",
              learning_rate=1e-3, protocol="holdout", task="binary", epochs=3, batch_size=64,
              early_stopping=True, patience=1, monitor="val_label_loss", head="pooled",
              dropout=0.25, width=8, dataset=data.fingerprint())

  def make(root, reuse):
    return context.RunContext(workdir=root, data=data, strategy=tf.distribute.get_strategy(),
                              reuse_models=reuse)

  warm = make(tmp_path / "warm", 2)
  executor.execute_run(RunSpec(seed=0, **spec), warm)
  (kept,) = warm._warm.values()
  trained = [v.numpy().copy() for v in kept.student.variables]
  row = executor.execute_run(RunSpec(seed=1, **spec), warm)
  assert list(warm._warm.values()) == [kept]  # The second run trained the first run's model...
  assert any(not np.array_equal(a, v.numpy()) for a, v in zip(trained, kept.student.variables))
  cold = make(tmp_path / "cold", 0)
  fresh = executor.execute_run(RunSpec(seed=1, **spec), cold)
  assert not cold._warm
  # ... from exactly the state a new model starts in: same epochs, same predictions.
  assert (row["epochs_run"], row["best_epoch"]) == (fresh["epochs_run"], fresh["best_epoch"])
  got, want = (pd.read_parquet(pathlib.Path(r["checkpoint"]).parent / executor.PREDICTIONS)
               for r in (row, fresh))
  np.testing.assert_allclose(got["student_logit"], want["student_logit"], rtol=1e-5, atol=1e-5)
  assert row["f1"] == pytest.approx(fresh["f1"])
