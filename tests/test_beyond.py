"""Beyond the study: consistent teaching and function matching, ensembles, born-again and
self-distillation, sweeps, fidelity, the unseen-class experiment and model selection.

The end-to-end tests run `stages.distill` on the smoke study's zoo (two encoders' teachers)
once, with a matrix that crosses these methods, and read what it wrote.
"""

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from simclr_distill import labelling, losses, matrix, metrics, results, scoring, selection
from simclr_distill import config as C
from simclr_distill import teachers as teachers_lib
from simclr_distill.data import digits, records
from simclr_distill.data import splits as splits_lib
from simclr_distill.training import context, distiller, executor, rundata, runtime
from tests.test_matrix import study_zoo
from tests.test_stages import stage

# ---- Consistent, independent and mixed-up views: what each network saw in one step ----------

BATCH = 8


class Recorder(keras.layers.Layer):
  """Passes its input through and keeps a copy of the last batch it saw in a variable."""

  def __init__(self, shape, **kwargs):
    super().__init__(**kwargs)
    self.seen = self.add_weight(shape=(BATCH, *shape), initializer="zeros", trainable=False,
                                name="seen")

  def call(self, x):
    if x.shape[0] == BATCH:  # Not during Keras' symbolic shape inference.
      self.seen.assign(x)
    return x


class RecordingNet(keras.Model):
  def __init__(self, shape, seed, **kwargs):
    super().__init__(**kwargs)
    self.recorder = Recorder(shape)
    self.flat = keras.layers.Flatten()
    self.out = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed))

  def call(self, x, training=False):
    return self.out(self.flat(self.recorder(x)))


@pytest.fixture(scope="module")
def digits_context(tmp_path_factory):
  root = tmp_path_factory.mktemp("digits")
  digits.prepare_digits(root / "data", percents=(10, 100))
  data = records.PreparedData.open(root / "data")
  ctx = context.RunContext(workdir=root, data=data, strategy=tf.distribute.get_strategy(),
                           shuffle_buffer=256)
  return ctx


def _run(mode, *, augment="mild_crop", mixup=0.0):
  entry = teachers_lib.TeacherEntry("t", "basic", 10, "t.keras", output="logits")
  return matrix.RunSpec(
      stage="distill", arch="mlp", labeling="basic", split_percent=10, optimizer="adam",
      learning_rate=1e-3, seed=3, protocol="holdout", task="binary", epochs=1,
      batch_size=BATCH, early_stopping=False, patience=1, monitor="val_label_loss",
      head="pooled", dropout=0.0, width=None, dataset="d", teacher=entry, teacher_mode=mode,
      loss=C.LossConfig(kind="soft_kl"), augment=augment, mixup=mixup)


def _one_step(ctx, run):
  """Trains one step on the run's first batch; returns (batch images, teacher's input,
  student's input)."""
  datasets = rundata.RunDatasets(run, ctx, cached=None, teacher_in_targets=False)
  images, targets = next(iter(datasets.train()))
  shape = ctx.data.image_shape
  teacher = teachers_lib.Teacher(run.teacher, RecordingNet(shape, 1), "logits")
  student = RecordingNet(shape, 2)
  model = distiller.Distiller(student, task="binary", loss_kind="soft_kl", teacher=teacher)
  model.compile(optimizer=keras.optimizers.SGD(0.1))
  model.fit(datasets.train().take(1), epochs=1, verbose=0)
  return (images, targets, teacher.model.recorder.seen.numpy(),
          student.recorder.seen.numpy())


def _plain_images(ctx):
  return np.stack([ex["image"].numpy() for ex in ctx.data.examples()])


def _distance_to_nearest(images, plain):
  flat, reference = images.reshape(len(images), -1), plain.reshape(len(plain), -1)
  return np.sqrt(((flat[:, None] - reference[None]) ** 2).sum(-1)).min(1)


def test_consistent_teaching_with_mixup_feeds_teacher_and_student_the_same_mixed_batch(digits_context):
  ctx = digits_context
  images, targets, teacher_saw, student_saw = _one_step(ctx, _run("consistent", mixup=1.0))
  np.testing.assert_array_equal(teacher_saw, student_saw)
  np.testing.assert_array_equal(student_saw, images.numpy())  # The pipeline's batch, as drawn.
  # Mixed up: no image of the batch is one of the data's plain images, and no label applies.
  assert (_distance_to_nearest(student_saw, _plain_images(ctx)) > 1e-3).all()
  assert float(tf.reduce_sum(targets["mask"])) == 0.0


def test_consistent_teaching_without_mixup_shares_the_augmented_view(digits_context):
  ctx = digits_context
  images, targets, teacher_saw, student_saw = _one_step(ctx, _run("consistent"))
  np.testing.assert_array_equal(teacher_saw, student_saw)
  assert (_distance_to_nearest(student_saw, _plain_images(ctx)) > 1e-3).any()  # Augmented.


def test_independent_teaching_gives_each_network_its_own_view(digits_context):
  ctx = digits_context
  images, _, teacher_saw, student_saw = _one_step(ctx, _run("independent"))
  assert isinstance(images, dict)
  np.testing.assert_array_equal(teacher_saw, images["teacher"].numpy())
  np.testing.assert_array_equal(student_saw, images["student"].numpy())
  assert np.abs(teacher_saw - student_saw).reshape(BATCH, -1).max(1).min() > 1e-3


def test_a_seed_repeats_the_views_and_mixup(digits_context):
  run = _run("consistent", mixup=1.0)
  first = rundata.RunDatasets(run, digits_context, None, teacher_in_targets=False).train()
  again = rundata.RunDatasets(run, digits_context, None, teacher_in_targets=False).train()
  for (a, _), (b, _) in zip(first.take(2), again.take(2)):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


# ---- Ensembles, fidelity and model selection: pure parts -----------------------------------


def test_ensembles_average_logits_or_probabilities():
  a, b = np.array([[2.0], [-1.0]]), np.array([[0.0], [3.0]])
  np.testing.assert_allclose(teachers_lib.combine_logits([a, b], "logits"), [[1.0], [1.0]])
  probs = np.asarray(tf.sigmoid(teachers_lib.combine_logits([a, b], "probabilities")))
  np.testing.assert_allclose(probs, (tf.sigmoid(a) + tf.sigmoid(b)) / 2, rtol=1e-6)
  k1, k2 = np.array([[1.0, 2.0, 3.0]]), np.array([[3.0, 0.0, -1.0]])
  got = np.asarray(tf.nn.softmax(teachers_lib.combine_logits([k1, k2], "probabilities")))
  np.testing.assert_allclose(got, (tf.nn.softmax(k1) + tf.nn.softmax(k2)) / 2, rtol=1e-6)
  with pytest.raises(ValueError, match="different shapes"):
    teachers_lib.combine_logits([a, k1], "logits")
  with pytest.raises(ValueError, match="unknown ensemble combination 'median'"):
    teachers_lib.combine_logits([a, b], "median")


def test_teacher_student_kl_is_the_binary_or_categorical_kl():
  t, s = np.array([0.9, 0.2]), np.array([0.6, 0.2])
  want = np.mean([0.9 * np.log(0.9 / 0.6) + 0.1 * np.log(0.1 / 0.4), 0.0])
  assert metrics.teacher_student_kl(t, s) == pytest.approx(want, rel=1e-6)
  assert metrics.teacher_student_kl(t, t) == 0.0
  pt, ps = np.array([[0.7, 0.2, 0.1]]), np.array([[0.5, 0.25, 0.25]])
  assert metrics.teacher_student_kl(pt, ps) == pytest.approx(float(np.sum(pt * np.log(pt / ps))))
  # The same quantity as the training-time KL tracker (losses, from logits, T = 1).
  logits_t, logits_s = np.log(pt), np.log(ps)
  tracked = float(losses.soft_target_loss(logits_t, logits_s, task="multiclass", kind="kl")[0])
  assert metrics.teacher_student_kl(pt, ps) == pytest.approx(tracked, rel=1e-5)
  with pytest.raises(ValueError, match="differ in shape"):
    metrics.teacher_student_kl(t, pt)


def _selection_model():
  keras.utils.set_random_seed(0)
  net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
  net.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
  return net


def _fit(net, callback, losses_by_epoch, initial_epoch=0):
  """Fits with val_loss forced to the given sequence, one value per epoch."""

  class Forced(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      logs["val_score"] = losses_by_epoch[epoch]

  x, y = np.ones((4, 2), np.float32), np.ones((4, 1), np.float32)
  net.fit(x, y, epochs=len(losses_by_epoch), initial_epoch=initial_epoch, verbose=0,
          callbacks=[Forced(), callback])


def test_model_selection_keeps_the_best_epoch_stops_on_patience_and_resumes(tmp_path):
  net = _selection_model()
  sel = selection.ModelSelection(net, monitor="val_score", patience=2, select="best",
                                 state_dir=tmp_path / "s")
  weights_by_epoch = []

  class Snapshot(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      weights_by_epoch.append(net.get_weights())

  scores = [0.1, 0.5, 0.3, 0.2, 0.9, 0.9]  # Maximised (no "loss" or "kl" in the name).
  x, y = np.ones((4, 2), np.float32), np.ones((4, 1), np.float32)

  class Forced(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      logs["val_score"] = scores[epoch]

  net.fit(x, y, epochs=6, verbose=0, callbacks=[Forced(), Snapshot(), sel])
  assert (sel.best_epoch, sel.last_epoch) == (2, 4)  # 0.3, 0.2 did not beat 0.5: stop after 4.
  for got, want in zip(net.get_weights(), weights_by_epoch[1]):
    np.testing.assert_array_equal(got, want)  # Best restored...
  for got, want in zip(sel.last_weights, weights_by_epoch[3]):
    np.testing.assert_array_equal(got, want)  # ...and the last kept for scoring.

  # A run killed after epoch 2 resumes with its best so far from the state on disk.
  state = tmp_path / "resume"
  first = selection.ModelSelection(net, monitor="val_score", patience=0, state_dir=state)
  _fit(net, first, [0.4, 0.7])
  resumed = selection.ModelSelection(_selection_model(), monitor="val_score", patience=0,
                                     state_dir=state)
  _fit(resumed.network, resumed, [0.4, 0.7, 0.5, 0.6, 0.65], initial_epoch=2)
  assert (resumed.best_epoch, resumed.best_value, resumed.last_epoch) == (2, 0.7, 5)
  for got, want in zip(resumed.network.get_weights(), first.best_weights):
    np.testing.assert_array_equal(got, want)


def test_model_selection_names_the_metrics_when_the_monitor_is_not_logged(tmp_path):
  net = _selection_model()
  sel = selection.ModelSelection(net, monitor="val_auc", state_dir=tmp_path)
  with pytest.raises(ValueError, match="monitors 'val_auc'.*it logs .*val_score"):
    _fit(net, sel, [0.1])


def test_cosine_schedule_warms_up_then_decays_to_zero():
  schedule = runtime.learning_rate_schedule(1e-3, "cosine", total_steps=100, warmup_steps=10)
  rates = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
  assert rates[0] == 0.0 and rates[1] == pytest.approx(5e-4) and rates[2] == pytest.approx(1e-3)
  assert rates[3] == pytest.approx(5e-4, rel=1e-3) and rates[4] == pytest.approx(0.0, abs=1e-9)
  assert runtime.learning_rate_schedule(0.1, "constant") == 0.1
  # The optimizer reads it at its own step, which BackupAndRestore restores on a resume.
  opt = runtime.build_optimizer("adam", 1e-3, schedule="cosine", total_steps=100, warmup_steps=10)
  opt.build([keras.Variable(np.zeros(1, np.float32))])
  opt.iterations.assign(55)
  assert float(opt.learning_rate) == pytest.approx(5e-4, rel=1e-3)


# ---- Sweeps as matrix axes ---------------------------------------------------------------------


def test_every_sweep_axis_multiplies_the_matrix_and_is_a_column():
  cfg = C.override(C.get_preset("paper"), {
      "student.archs": ("ResNet50",), "data.split_percents": (10,), "data.schemes": ("basic",),
      "loss.kinds": ("hard", "soft_kl"), "loss.temperatures": (1.0, 4.0), "loss.alphas": (0.0, 0.5),
      "train.learning_rates": (1e-3, 1e-4), "train.epochs": (20, 50), "train.seeds": (0, 1, 2),
      "train.optimizers": ("adam", "sgd"), "teacher.modes": ("offline", "consistent"),
      "teacher.ensemble_over": ("encoder",)})
  runs = matrix.build_matrix(cfg, study_zoo(), "d")
  # (3 single + 1 ensemble teachers) x 3 losses x 2 alphas x 2 lrs x 2 epochs x 3 seeds x 2
  # optimizers x 2 modes.
  assert len(runs) == 4 * 3 * 2 * 2 * 2 * 3 * 2 * 2 == len({r.run_id for r in runs})
  axes = runs[0].axes()
  for column in ("temperature", "alpha", "learning_rate", "optimizer", "epochs", "seed",
                 "teacher_mode", "method"):
    assert column in axes
    assert len({r.axes()[column] for r in runs}) > 1, column
  assert {r.loss.temperature for r in runs if r.loss.kind == "hard"} == {1.0}
  ensembles = {r.teacher.teacher_id for r in runs if r.teacher.members}
  assert ensembles == {"BEN-basic-10+CA_adam-basic-10+CA_sgd-basic-10"}
  assert {r.augment for r in runs if r.teacher_mode == "consistent"} == {"inception_crop"}
  assert {r.augment for r in runs if r.teacher_mode == "offline"} == {""}
  picked = matrix.select(runs, only="method=soft_kl T=4 a=0.5 / consistent,epochs=20")
  # The single teachers (the ensemble is its own method) x 2 lrs x 3 seeds x 2 optimizers.
  assert len(picked) == 3 * 2 * 3 * 2 and {r.epochs for r in picked} == {20}


def test_run_ids_of_earlier_releases_stay_valid():
  # Fields added later are left out of the hash at their defaults: finished runs are found.
  runs = matrix.build_matrix(C.get_preset("paper"), study_zoo(), "ben:590326:0")
  assert runs[0].run_id == "distill-InceptionV3-BEN-basic-1-adam-s0-51a920485a"
  # The demo preset's baselines before --min_steps_per_epoch: at its default (0) the field is
  # left out of the hash; the preset's 20 is a new setting, so a new id.
  demo = C.override(C.get_preset("demo"), {"baseline": True, "train.min_steps_per_epoch": 0})
  assert matrix.build_matrix(demo, study_zoo()[:2], "d")[0].run_id == (
      "baseline-cnn-basic-10-adam-s0-2bca936aed")
  now = C.override(C.get_preset("demo"), {"baseline": True})
  assert matrix.build_matrix(now, study_zoo()[:2], "d")[0].run_id != (
      "baseline-cnn-basic-10-adam-s0-2bca936aed")


def test_explicit_ensembles_must_name_zoo_teachers_of_one_split():
  cfg = C.override(C.get_preset("paper"), {"teacher.ensembles": ("BEN-basic-10+CA_sgd-basic-3",)})
  with pytest.raises(teachers_lib.TeacherError, match="mixes teachers of split_percent 10, 3"):
    matrix.build_matrix(cfg, study_zoo(), "d")
  cfg = C.override(C.get_preset("paper"), {"teacher.ensembles": ("BEN-basic-10+XX-basic-10",)})
  with pytest.raises(teachers_lib.TeacherError, match="names teacher.s. XX-basic-10 that the zoo lacks"):
    matrix.build_matrix(cfg, study_zoo(), "d")


# ---- End to end through stages.distill -------------------------------------------------------


METHODS_MATRIX = ("--split_percents=10", "--encoders=digits_adam", "--ensemble_over=encoder",
                  "--archs=mlp,same", "--optimizers=adam", "--loss=soft_kl", "--temperature=4",
                  "--teacher_mode=offline,consistent", "--augment=mild_crop", "--mixup=1",
                  "--generations=2", "--epochs=3", "--nobaseline")


@pytest.fixture(scope="module")
def beyond(smoke_study, tmp_path_factory):
  """One stage-3 matrix over the smoke study's zoo: a single teacher and the ensemble of both
  encoders' teachers x offline and consistent+mixup teaching x the MLP and self-distillation
  x two born-again generations."""
  study_dir, _ = smoke_study
  workdir = tmp_path_factory.mktemp("beyond")
  proc = stage("stages.distill", "--preset=smoke", f"--workdir={workdir}",
               f"--teacher_zoo={study_dir / 'zoo'}", f"--data_dir={study_dir / 'data'}",
               *METHODS_MATRIX)
  table = pd.read_parquet(workdir / results.TABLE_PARQUET)
  return workdir, study_dir, table, proc


def _predictions(workdir, run_id):
  return pd.read_parquet(workdir / "runs" / run_id / executor.PREDICTIONS).set_index("id")


def test_the_methods_matrix_writes_a_row_per_run_and_generation_ensemble(beyond):
  workdir, _, table, proc = beyond
  assert (table["status"] == "ok").all(), table[table["status"] != "ok"][["run_id", "error"]]
  distilled = table[table["stage"] == "distill"]
  # Teachers: digits_adam and the ensemble; "same" copies the single teacher only.
  # (mlp: 2 teachers + same: 1) x 2 modes x 2 generations.
  assert len(distilled) == 3 * 2 * 2
  assert distilled["generation"].value_counts().to_dict() == {1: 6, 2: 6}
  assert len(table[table["stage"] == "generation_ensemble"]) == 6
  assert set(distilled["teacher_mode"]) == {"offline", "consistent"}
  assert set(distilled[distilled["teacher_mode"] == "consistent"]["mixup"]) == {1.0}
  assert set(distilled[distilled["teacher_mode"] == "consistent"]["augment"]) == {"mild_crop"}
  # Fidelity beside the label metrics in every distillation row.
  assert distilled[["agreement", "teacher_kl", "f1"]].notna().all().all()
  assert (distilled["teacher_kl"] >= 0).all() and distilled["agreement"].between(0, 1).all()
  assert "method" in proc.stdout  # The closing summary compares the methods.


def test_an_offline_ensemble_teaches_the_combination_of_its_members_logits(beyond):
  workdir, study_dir, table, _ = beyond
  row = table[(table["stage"] == "distill") & (table["teacher_members"] != "") &
              (table["teacher_mode"] == "offline") & (table["generation"] == 1)].iloc[0]
  assert row["teacher_members"] == "digits_adam-basic-10+none-basic-10"
  assert row["ensemble_combine"] == "logits" and row["encoder"] == "digits_adam+none"
  saved = _predictions(workdir, row["run_id"])
  member_logits = []
  for member in row["teacher_members"].split("+"):
    ids, logits = labelling.load_cached_logits(workdir / "labels", member)
    member_logits.append(pd.Series(logits[:, 0], index=ids).loc[saved.index].to_numpy())
  want = 1 / (1 + np.exp(-np.mean(member_logits, axis=0)))
  np.testing.assert_allclose(saved["teacher_prob"], want, rtol=1e-5)
  # The online (consistent) run with the same ensemble scores the same teacher on test.
  online = table[(table["stage"] == "distill") & (table["teacher_members"] != "") &
                 (table["teacher_mode"] == "consistent") & (table["generation"] == 1)].iloc[0]
  np.testing.assert_allclose(_predictions(workdir, online["run_id"])["teacher_prob"].loc[saved.index],
                             want, rtol=1e-4)


def test_born_again_generation_two_learns_from_generation_ones_student(beyond):
  workdir, _, table, _ = beyond
  rows = table.set_index("run_id")
  second = table[(table["stage"] == "distill") & (table["generation"] == 2)]
  for _, child in second.iterrows():
    parent = rows.loc[child["teacher_id"]]  # Its teacher is the parent run.
    assert parent["generation"] == 1 and child["root_teacher_id"] == parent["teacher_id"]
    assert child["method"] == parent["method"] + " / gen2"
    np.testing.assert_allclose(_predictions(workdir, child["run_id"])["teacher_prob"],
                               _predictions(workdir, parent.name)["student_prob"], rtol=1e-4)
  # The ensemble of a chain's generations: the mean of their logits, scored like a run.
  ensemble = table[table["stage"] == "generation_ensemble"].iloc[0]
  gen1, gen2 = ensemble["teacher_members"].split()  # Run ids may hold "+".
  want = (_predictions(workdir, gen1)["student_logit"] + _predictions(workdir, gen2)["student_logit"]) / 2
  got = _predictions(workdir, ensemble["run_id"])
  np.testing.assert_allclose(got["student_logit"], want.loc[got.index], rtol=1e-6)
  scored = scoring.score(got.reset_index(), "binary")
  assert ensemble["f1"] == pytest.approx(scored["f1"])
  assert ensemble["agreement"] == pytest.approx(scored["agreement"])


def test_self_distillation_trains_the_teachers_own_network(beyond):
  workdir, study_dir, table, _ = beyond
  row = table[(table["stage"] == "distill") & table["arch"].str.startswith("same")].iloc[0]
  assert row["arch"] == "same:cnn" and "self" in row["method"]
  student = keras.models.load_model(workdir / row["checkpoint"])  # Relative to the workdir.
  teacher = keras.models.load_model(study_dir / "zoo" / "digits_adam-basic-10.keras")
  assert student.count_params() == teacher.count_params()
  assert [type(layer).__name__ for layer in student.layers] == [
      type(layer).__name__ for layer in teacher.layers]
  assert any(not np.allclose(a, b) for a, b in zip(student.get_weights(), teacher.get_weights()))


def test_rows_record_best_and_last_epoch_and_the_last_epochs_f1(beyond):
  _, _, table, _ = beyond
  distilled = table[table["stage"] == "distill"]
  assert (distilled["epochs_run"] == 3).all() and distilled["best_epoch"].between(1, 3).all()
  assert (distilled["selected_epoch"] == distilled["best_epoch"]).all()
  assert set(distilled["select"]) == {"best"} and set(distilled["monitor"]) == {"val_label_loss"}
  last = distilled[distilled["best_epoch"] == distilled["epochs_run"]]
  assert (last["last_f1"] == last["f1"]).all() and distilled["last_f1"].notna().all()


def test_results_group_by_prints_mean_std_and_count_per_method(beyond):
  workdir, _, table, _ = beyond
  proc = stage("stages.results", f"--workdirs={workdir}", "--group_by=stage,method",
               "--metrics=f1,agreement", f"--output={workdir / 'by_method.csv'}")
  for method in table["method"].unique():
    assert method in proc.stdout
  assert "mean" in proc.stdout and "std" in proc.stdout and "count" in proc.stdout
  grouped = pd.read_csv(workdir / "by_method.csv", header=[0, 1], index_col=[0, 1])
  distilled = table[table["stage"] == "distill"]
  for method, rows in distilled.groupby("method"):
    assert grouped.loc[("distill", method), ("f1", "mean")] == pytest.approx(rows["f1"].mean(), abs=1e-4)
    assert grouped.loc[("distill", method), ("agreement", "count")] == len(rows)


def test_a_finished_matrix_with_generations_reruns_without_training(beyond):
  workdir, study_dir, table, _ = beyond
  proc = stage("stages.distill", "--preset=smoke", f"--workdir={workdir}",
               f"--teacher_zoo={study_dir / 'zoo'}", f"--data_dir={study_dir / 'data'}",
               *METHODS_MATRIX)
  assert "6 already finished, 0 to train" in proc.stderr
  assert len(pd.read_parquet(workdir / results.TABLE_PARQUET)) == len(table)


@pytest.mark.parametrize("args, message", [
    (("--teacher_mode=offline", "--mixup=0.5"), "add consistent to --teacher_mode"),
    (("--teacher_mode=fixed", "--augment=none"), "give --augment a policy"),
    (("--teacher_mode=consistent", "--augment=warp"), "unknown augmentation policy 'warp'"),
    (("--student_classes=0,1",), "needs --task=multiclass"),
    (("--temperature=hot",), "--temperature=hot: could not convert"),
    (("--ensembles=none-basic-10+ghost-basic-10",), "names teacher(s) ghost-basic-10"),
    (("--monitor=val_f2",), "(--monitor)='val_f2' is not one of val_label_loss"),
])
def test_bad_method_flags_are_explained(beyond, args, message):
  workdir, study_dir, _, _ = beyond
  proc = stage("stages.distill", "--preset=smoke", f"--workdir={workdir}_bad",
               f"--teacher_zoo={study_dir / 'zoo'}", f"--data_dir={study_dir / 'data'}",
               "--split_percents=10", "--archs=mlp", "--optimizers=adam", "--epochs=1",
               "--nobaseline", *args, check=False)
  assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr


# ---- The unseen-class experiment ---------------------------------------------------------------


def test_soft_labels_of_seen_classes_teach_the_unseen_ones(tmp_path):
  """Hinton et al.'s experiment on the digits: the students never see digits 6-9; soft
  targets at T = 8 carry enough about them for the student to recognise most, hard
  pseudo-labels (which name an unseen class only where the teacher errs) do not.

  The expanded scheme's lists hold every digit (its test list 9-34 of each), unlike the
  basic scheme's, which are half eights."""
  stage("stages.distill", "--preset=smoke", f"--workdir={tmp_path}", "--task=multiclass",
        "--schemes=expanded", "--split_percents=100", "--optimizers=adam", "--nobaseline",
        "--archs=mlp", "--loss=hard,soft_kl", "--temperature=8", "--student_classes=0,1,2,3,4,5",
        "--epochs=30", "--patience=30")
  table = pd.read_parquet(tmp_path / results.TABLE_PARQUET)
  distilled = table[table["stage"] == "distill"].set_index("loss_kind")
  assert set(distilled["student_classes"]) == {"0,1,2,3,4,5"}
  data = records.PreparedData.open(tmp_path / "data")
  others = [data.splits(s) for s in data.schemes if s != "expanded"]
  pool = splits_lib.unlabelled_pool(data.ids(), data.splits("expanded"), "holdout", others)
  classes = [int(ex["class"]) for ex in data.examples(pool)]
  assert (distilled["train_examples"] == sum(c < 6 for c in classes)).all()
  for _, row in distilled.iterrows():
    per_class = dict(item.split(":") for item in row["class_accuracy"].split())
    assert sorted(per_class, key=int) == [str(k) for k in range(10)]
    seen = np.mean([float(per_class[str(k)]) for k in range(6)])
    assert row["seen_accuracy"] > 0.8 and seen > 0.8
  hard, soft = distilled.loc["hard"], distilled.loc["soft_kl"]
  assert soft["unseen_accuracy"] > hard["unseen_accuracy"] + 0.3
  assert soft["teacher_kl"] < hard["teacher_kl"]
