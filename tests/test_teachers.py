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
  assert len(parts) == 3 and labelling.is_labelled(tmp_path, teacher, checkpoint, data)
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
