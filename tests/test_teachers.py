import numpy as np
import pandas as pd
import pytest
import keras

from simclr_distill import labelling, teachers as T
from simclr_distill.data import digits


def _model(activation=None, units=1, shape=(8, 8, 1), seed=0):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input(shape, name="image")
  x = keras.layers.Flatten()(inputs)
  x = keras.layers.Dense(8, activation="relu")(x)
  return keras.Model(inputs, keras.layers.Dense(units, activation=activation)(x))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
  """One logits teacher saved three ways, plus a probabilities teacher and misfits."""
  root = tmp_path_factory.mktemp("zoo")
  logits_model = _model()
  logits_model.save(root / "t.keras")
  logits_model.save(root / "t.h5")
  logits_model.export(str(root / "t_savedmodel"), verbose=False)
  prob_model = _model("sigmoid", seed=1)
  prob_model.save(root / "p.keras")
  _model(shape=(16, 16, 3)).save(root / "wrong_shape.keras")
  _model(units=3).save(root / "wrong_units.keras")
  rows = [
      dict(teacher_id="keras", labeling="basic", split_percent=10, path="t.keras"),
      dict(teacher_id="h5", labeling="basic", split_percent=10, path="t.h5"),
      dict(teacher_id="savedmodel", labeling="basic", split_percent=10, path="t_savedmodel",
           output="logits"),
      dict(teacher_id="probs", labeling="basic", split_percent=10, path="p.keras"),
  ]
  T.write_zoo(root, [T.TeacherEntry(encoder="BEN", encoder_optimizer="adam", **r) for r in rows])
  return root, logits_model, prob_model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return digits.prepare_digits(tmp_path_factory.mktemp("data"), num_shards=3)


def _images(n=32):
  return np.random.default_rng(0).random((n, 8, 8, 1), dtype=np.float32)


def test_keras_h5_and_savedmodel_teachers_give_the_same_logits(zoo):
  root, logits_model, _ = zoo
  entries = {e.teacher_id: e for e in T.read_zoo(root)}
  assert entries["keras"].encoder == "BEN" and entries["keras"].split_percent == 10
  x = _images()
  expected = np.asarray(logits_model(x))
  for name in ("keras", "h5", "savedmodel"):
    teacher = T.load_teacher(entries[name], root, image_shape=(8, 8, 1), num_outputs=1, sample=x)
    assert teacher.output == "logits"
    np.testing.assert_allclose(np.asarray(teacher.logits(x)), expected, rtol=1e-5, atol=1e-6)


def test_probability_teacher_is_detected_and_inverted_to_logits(zoo):
  root, _, prob_model = zoo
  entry = {e.teacher_id: e for e in T.read_zoo(root)}["probs"]
  teacher = T.load_teacher(entry, root, image_shape=(8, 8, 1), num_outputs=1)
  assert teacher.output == "probabilities"
  x = _images()
  probs = np.asarray(prob_model(x), np.float64)
  np.testing.assert_allclose(np.asarray(teacher.logits(x)), np.log(probs / (1 - probs)), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("entry, kwargs, message", [
    (dict(path="wrong_shape.keras"), {}, r"'bad' expects inputs of shape 16x16x3 but the data has 8x8x1"),
    (dict(path="wrong_units.keras"), {}, r"'bad' has 3 output unit\(s\); the task needs 1"),
    (dict(path="p.keras", output="logits"), {}, "declared to output logits but its last layer gives probabilities"),
    (dict(path="missing.keras"), {}, "'bad': no checkpoint at .*missing.keras; fix its path"),
    (dict(path="t_savedmodel"), {}, "cannot tell whether it outputs logits or probabilities"),
])
def test_mismatched_teachers_are_named_with_what_they_expect(zoo, entry, kwargs, message):
  root, _, _ = zoo
  bad = T.TeacherEntry(teacher_id="bad", labeling="basic", split_percent=1, **entry)
  with pytest.raises(T.TeacherError, match=message):
    T.load_teacher(bad, root, image_shape=(8, 8, 1), num_outputs=1, **kwargs)


def test_savedmodel_declared_logits_that_look_like_probabilities_is_refused(tmp_path):
  _model("sigmoid").export(str(tmp_path / "sm"), verbose=False)
  entry = T.TeacherEntry(teacher_id="sm", labeling="basic", split_percent=1, path="sm", output="logits")
  with pytest.raises(T.TeacherError, match="outputs on the data lie in \\[0, 1\\]"):
    T.load_teacher(entry, tmp_path, image_shape=(8, 8, 1), num_outputs=1, sample=_images())


def test_manifest_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="no teacher zoo manifest"):
    T.read_zoo(tmp_path)
  (tmp_path / T.MANIFEST).write_text("teacher_id,labeling,path\na,basic,a.keras\n")
  with pytest.raises(T.TeacherError, match="lacks column\\(s\\) split_percent"):
    T.read_zoo(tmp_path)
  (tmp_path / T.MANIFEST).write_text("teacher_id,labeling,split_percent,path\na,balanced,1,a.keras\n")
  with pytest.raises(T.TeacherError, match="line 2 \\(teacher 'a'\\): labeling 'balanced'"):
    T.read_zoo(tmp_path)
  (tmp_path / T.MANIFEST).write_text(
      "teacher_id,labeling,split_percent,path\na,basic,1,a.keras\na,basic,3,b.keras\n")
  with pytest.raises(T.TeacherError, match="repeats teacher_id 'a'"):
    T.read_zoo(tmp_path)


def test_labelling_caches_every_example_once_keyed_by_id_and_resumes(zoo, data, tmp_path):
  root, logits_model, _ = zoo
  entry = {e.teacher_id: e for e in T.read_zoo(root)}["keras"]
  teacher = T.load_teacher(entry, root, image_shape=(8, 8, 1), num_outputs=1)
  checkpoint = entry.resolve(root)
  out = labelling.label_with_teacher(teacher, checkpoint, data, tmp_path, batch_size=100)
  ids, logits = labelling.load_cached_logits(tmp_path, "keras")
  assert len(ids) == len(set(ids)) == 1797 and logits.shape == (1797, 1)
  # Keyed by id: compare against the model on the same images, looked up by id.
  by_id = {ex["id"].numpy().decode(): ex["image"].numpy() for ex in data.examples()}
  some = [3, 500, 1796]
  expected = np.asarray(logits_model(np.stack([by_id[ids[i]] for i in some])))
  np.testing.assert_allclose(logits[some], expected, rtol=1e-5, atol=1e-6)
  parts = sorted(out.glob("*.parquet"))
  assert len(parts) == 3 and labelling.is_labelled(tmp_path, teacher.entry, checkpoint, data)
  # Resume: a lost part is rebuilt, the others are not rewritten.
  mtimes = {p.name: p.stat().st_mtime_ns for p in parts}
  parts[1].unlink()
  (out / labelling.COMPLETE).unlink()
  labelling.label_with_teacher(teacher, checkpoint, data, tmp_path, batch_size=100)
  assert parts[1].is_file()
  assert parts[0].stat().st_mtime_ns == mtimes[parts[0].name]
  ids2, logits2 = labelling.load_cached_logits(tmp_path, "keras")
  pd.testing.assert_frame_equal(pd.DataFrame(logits2, index=ids2).sort_index(),
                                pd.DataFrame(logits, index=ids).sort_index())


def test_missing_cache_says_to_run_the_label_stage(tmp_path):
  with pytest.raises(FileNotFoundError, match="run `python -m stages.label`"):
    labelling.load_cached_logits(tmp_path, "nobody")


def _wide_sigmoid_teacher(tmp_path, activation_layer=False):
  """A sigmoid teacher whose pre-activation logits on the test images span -80 .. +80."""
  keras.utils.set_random_seed(0)
  inputs = keras.Input((8, 8, 1), name="image")
  x = keras.layers.Flatten()(inputs)
  dense = keras.layers.Dense(1, activation=None if activation_layer else "sigmoid", name="out")
  logits = dense(x)
  outputs = keras.layers.Activation("sigmoid")(logits) if activation_layer else logits
  model = keras.Model(inputs, outputs)
  images = _images(64)
  flat = images.reshape(64, -1)
  # Kernel and bias chosen so the pre-activations are evenly spread over [-80, 80].
  kernel = np.random.default_rng(1).standard_normal((64, 1)).astype(np.float32)
  raw = flat @ kernel
  scale = 160.0 / float(raw.max() - raw.min())
  kernel *= scale
  bias = -80.0 - float(raw.min()) * scale
  dense.set_weights([kernel, np.array([bias], np.float32)])
  target = (flat @ kernel + bias)[:, 0]
  assert target.min() == pytest.approx(-80, abs=1e-3) and target.max() == pytest.approx(80, abs=1e-3)
  return model, images, target.astype(np.float64)


@pytest.mark.parametrize("fmt, activation_layer", [("keras", False), ("h5", False), ("keras", True)])
def test_probability_teachers_give_their_exact_pre_activation_logits(tmp_path, fmt, activation_layer):
  """|logit| up to 80: sigmoid saturates in float32 beyond about 17, so inverting the outputs
  cannot give these back; skipping the final activation gives them within 1e-4."""
  model, images, target = _wide_sigmoid_teacher(tmp_path, activation_layer)
  model.save(tmp_path / f"p.{fmt}")
  entry = T.TeacherEntry(teacher_id="p", labeling="basic", split_percent=1, path=f"p.{fmt}",
                         output="probabilities")
  for fold in (True, False):
    teacher = T.load_teacher(entry, tmp_path, image_shape=(8, 8, 1), num_outputs=1,
                             sample=images, fold_batchnorm=fold)
    assert (teacher.output, teacher.logits_source) == ("probabilities", "pre_activation")
    np.testing.assert_allclose(np.asarray(teacher.logits(images))[:, 0], target, atol=1e-4, rtol=1e-6)
    np.testing.assert_allclose(teacher.predict_logits(
        __import__("tensorflow").data.Dataset.from_tensor_slices(images).batch(16))[:, 0],
        target, atol=1e-4, rtol=1e-6)


def test_savedmodel_probabilities_are_inverted_in_float64_over_float32s_whole_range(tmp_path):
  model, images, target = _wide_sigmoid_teacher(tmp_path)
  model.export(str(tmp_path / "sm"), verbose=False)
  entry = T.TeacherEntry(teacher_id="sm", labeling="basic", split_percent=1, path="sm",
                         output="probabilities")
  teacher = T.load_teacher(entry, tmp_path, image_shape=(8, 8, 1), num_outputs=1, sample=images)
  assert teacher.logits_source == "inverted"
  got = np.asarray(teacher.logits(images), np.float64)[:, 0]
  # Recoverable as far as float32 holds the probability: p = e^x to float32's relative
  # precision on the negative side (to -87, where the sigmoid underflows), while on the
  # positive side 1 - p has an absolute spacing of 6e-8, so the error grows as 6e-8 e^x.
  inside = target < 8
  np.testing.assert_allclose(got[inside], target[inside], atol=1e-4, rtol=1e-5)
  # The old float32 inversion stopped at +-16.12; saturated outputs now end at the range ends.
  assert got.min() < -79 and got.max() == pytest.approx(np.log(T.FLOAT32_BELOW_ONE / (1 - T.FLOAT32_BELOW_ONE)), rel=1e-6)
  assert np.isfinite(got).all()


def test_declared_probabilities_outside_0_1_are_refused_with_the_fix(tmp_path):
  _model().export(str(tmp_path / "logits_sm"), verbose=False)  # A logits model ...
  entry = T.TeacherEntry(teacher_id="mislabelled", labeling="basic", split_percent=1,
                         path="logits_sm", output="probabilities")  # ... declared otherwise.
  with pytest.raises(T.TeacherError, match="'mislabelled' is declared to output probabilities but "
                     r"\d+ of its 16 outputs on the data lie outside \[0, 1\].*Set its 'output' "
                     "column to logits"):
    T.load_teacher(entry, tmp_path, image_shape=(8, 8, 1), num_outputs=1, sample=_images() * 40)


def test_label_cache_records_how_the_logits_were_obtained(zoo, data, tmp_path):
  root, _, _ = zoo
  entry = {e.teacher_id: e for e in T.read_zoo(root)}["probs"]
  teacher = T.load_teacher(entry, root, image_shape=(8, 8, 1), num_outputs=1)
  out = labelling.label_with_teacher(teacher, entry.resolve(root), data, tmp_path)
  import json
  assert json.loads((out / labelling.COMPLETE).read_text())["logits"] == "pre_activation"
