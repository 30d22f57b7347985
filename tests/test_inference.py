"""BatchNormalization folding of inference-only teachers (simclr_distill.inference)."""

import logging

import keras
import numpy as np
import pytest

from simclr_distill import inference, models, teachers as T


def _randomise_statistics(model: keras.Model, seed: int = 1) -> None:
  """Gives every BatchNormalization non-trivial statistics (fresh ones are the identity)."""
  rng = np.random.default_rng(seed)
  for layer in model._flatten_layers():
    if isinstance(layer, keras.layers.BatchNormalization):
      if layer.gamma is not None:
        layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
      if layer.beta is not None:
        layer.beta.assign(rng.normal(0, 0.2, layer.beta.shape))
      layer.moving_mean.assign(rng.normal(0, 0.2, layer.moving_mean.shape))
      layer.moving_variance.assign(rng.uniform(0.3, 2.0, layer.moving_variance.shape))


def _mixed_model() -> keras.Model:
  """Two foldable pairs and four BatchNormalizations that must stay."""
  keras.utils.set_random_seed(0)
  inputs = keras.Input((8, 8, 3), name="image")
  x = keras.layers.Conv2D(4, 3, use_bias=False, name="conv_nobias")(inputs)
  x = keras.layers.BatchNormalization(name="fold_1")(x)            # folded
  x = keras.layers.Conv2D(4, 3, activation="relu", name="conv_relu")(x)
  x = keras.layers.BatchNormalization(name="after_relu")(x)        # after a non-linearity
  branch = keras.layers.Conv2D(4, 1, name="conv_shared_output")(x)
  x = keras.layers.Add()([keras.layers.BatchNormalization(name="output_also_added")(branch),
                          branch])                                 # conv output read twice
  x = keras.layers.BatchNormalization(axis=1, name="other_axis")(
      keras.layers.Conv2D(4, 1, name="conv_axis1")(x))             # normalises rows, not channels
  x = keras.layers.Flatten()(x)
  x = keras.layers.Dense(6, name="dense")(x)
  x = keras.layers.BatchNormalization(center=False, scale=False, name="fold_2")(x)  # folded
  model = keras.Model(inputs, keras.layers.Dense(1, name="logits")(x))
  _randomise_statistics(model)
  return model


def _images(shape, n=8, seed=3):
  return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def _bn_names(model):
  return {l.name for l in model._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)}


def test_only_batchnorms_after_a_linear_single_use_layer_on_its_channels_are_folded():
  model = _mixed_model()
  before = [w.copy() for w in model.get_weights()]
  x = _images((8, 8, 3))
  result = inference.fold_batch_norm(model, x)
  assert result.folded == 2
  assert _bn_names(result.model) == {"after_relu", "output_also_added", "other_axis"}
  assert result.model.get_layer("conv_nobias").use_bias
  np.testing.assert_allclose(result.model(x), model(x, training=False), rtol=1e-5, atol=1e-5)
  assert 0 < result.deviation < inference.TOLERANCE
  # The original is untouched (the copy has its own variables).
  for a, b in zip(before, model.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_a_resnet_folds_every_batchnorm_and_the_copy_loads_in_plain_keras(tmp_path):
  keras.utils.set_random_seed(0)
  model = models.build_model("resnet18", (16, 16, 3), 1, width=8, head="pooled")
  _randomise_statistics(model)
  x = _images((16, 16, 3))
  result = inference.fold_batch_norm(model, x)
  assert result.folded == 20 and not _bn_names(result.model)
  expected = np.asarray(model(x, training=False))
  np.testing.assert_allclose(result.model(x), expected, rtol=1e-5, atol=1e-5)
  result.model.save(tmp_path / "folded.keras")
  loaded = keras.saving.load_model(tmp_path / "folded.keras")
  np.testing.assert_allclose(loaded(x), expected, rtol=1e-5, atol=1e-5)


def test_nested_and_sequential_models_fold_inside():
  keras.utils.set_random_seed(0)
  inner = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3),
                            keras.layers.BatchNormalization(), keras.layers.ReLU(),
                            keras.layers.GlobalAveragePooling2D()])
  inputs = keras.Input((6, 6, 2))
  outer = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))
  _randomise_statistics(outer)
  x = _images((6, 6, 2))
  for model in (inner, outer):
    result = inference.fold_batch_norm(model, x)
    assert result.folded == 1 and not _bn_names(result.model)
    np.testing.assert_allclose(result.model(x), model(x, training=False), rtol=1e-5, atol=1e-5)


def test_a_copy_that_deviates_is_discarded_with_a_warning(monkeypatch, caplog):
  model = _mixed_model()
  right = inference._folded_weights

  def wrong(layer, bn):
    kernel, bias = right(layer, bn)
    return [kernel * 1.01, bias]  # a 1% error: far beyond float rounding

  monkeypatch.setattr(inference, "_folded_weights", wrong)
  with caplog.at_level(logging.WARNING, logger="simclr_distill.inference"):
    result = inference.fold_batch_norm(model, _images((8, 8, 3)))
  assert result.model is model and result.folded == 0
  assert "changed its outputs" in caplog.text


def test_models_with_nothing_to_fold_or_that_cannot_be_cloned_come_back_unchanged():
  plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
  assert inference.fold_batch_norm(plain).model is plain

  class Subclassed(keras.Model):
    def __init__(self):
      super().__init__()
      self.conv = keras.layers.Conv2D(2, 1)
      self.bn = keras.layers.BatchNormalization()

    def call(self, x, training=False):
      return self.bn(self.conv(x), training=training)

  sub = Subclassed()
  sub(np.zeros((1, 4, 4, 1), np.float32))
  assert inference.fold_batch_norm(sub).model is sub


@pytest.mark.parametrize("fold", [True, False])
def test_load_teacher_runs_a_folded_copy_unless_told_not_to(tmp_path, fold):
  keras.utils.set_random_seed(0)
  network = models.build_model("resnet18", (8, 8, 1), 1, width=4, head="pooled")
  _randomise_statistics(network)
  network.save(tmp_path / "t.keras")
  entry = T.TeacherEntry(teacher_id="bn", labeling="basic", split_percent=10, path="t.keras",
                         output="logits")
  x = _images((8, 8, 1), n=16)
  teacher = T.load_teacher(entry, tmp_path, image_shape=(8, 8, 1), num_outputs=1, sample=x,
                           fold_batchnorm=fold)
  assert bool(_bn_names(teacher.model)) is not fold
  expected = np.asarray(network(x, training=False))
  np.testing.assert_allclose(teacher.logits(x), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(teacher.compiled_logits(x), expected, rtol=1e-5, atol=1e-5)
