"""Tests for simclr_distill.models: every architecture builds, runs, trains and round-trips.

The paper architectures are `slow` (TensorFlow traces their train step for tens of seconds on a
CPU); everything else stays fast.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from simclr_distill import models

PAPER = ("InceptionV3", "ResNet101V2", "ResNet152", "ResNet50", "Xception")
SMALL = ("cnn", "mlp", "resnet18")
PAPER_MIN_SIZE = {
    "Xception": 71,
    "InceptionV3": 75,
    "ResNet50": 32,
    "ResNet101V2": 32,
    "ResNet152": 32,
}
BANDS = 10  # Sentinel-2 bands used by the study.
TRACED_ARCH = "Xception"  # The paper architecture whose train step runs as a traced tf.function.


def _batch(input_shape, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(2, *input_shape)).astype("float32")


def _predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
  return keras.ops.convert_to_numpy(model(x, training=False))


def _study_head_params(flat_features: int, num_outputs: int) -> int:
  """Parameters of Flatten -> Dense 1024 -> 512 -> 256 -> Dense(num_outputs)."""
  sizes = (flat_features, 1024, 512, 256, num_outputs)
  return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def _assert_only_builtin_layers(model: keras.Model):
  # A .keras file that names a class outside Keras cannot load without this package.
  for layer in model.layers:
    assert type(layer).__module__.startswith("keras."), (layer.name, type(layer))
    assert not isinstance(layer, keras.layers.Lambda), layer.name


def _save_and_reload(model: keras.Model, path) -> keras.Model:
  model.save(path)
  return keras.models.load_model(path)


# ---- Registry and API ------------------------------------------------------------------------


def test_architecture_names():
  assert models.architecture_names(paper=True) == sorted(PAPER)
  assert models.architecture_names(paper=False) == sorted(SMALL)
  assert models.architecture_names() == sorted(PAPER + SMALL)
  assert models.ARCHITECTURES.names() == models.architecture_names()
  for arch, min_size in PAPER_MIN_SIZE.items():
    spec = models.ARCHITECTURES.get(arch)
    assert (spec.name, spec.min_size, spec.paper) == (arch, min_size, True)
  assert {a: models.ARCHITECTURES.get(a).min_size for a in SMALL} == {
      "mlp": 1,
      "cnn": 4,
      "resnet18": 8,
  }
  assert all(models.ARCHITECTURES.get(a).description for a in models.architecture_names())
  assert models.HEADS == ("study", "pooled")


# ---- Small architectures: build, forward, save, reload ---------------------------------------


@pytest.mark.parametrize("input_shape", [(8, 8, 1), (16, 16, 4)], ids=["8x8x1", "16x16x4"])
@pytest.mark.parametrize("num_outputs", [1, 3])
@pytest.mark.parametrize("head", models.HEADS)
@pytest.mark.parametrize("arch", SMALL)
def test_small_architecture_round_trip(arch, head, num_outputs, input_shape, tmp_path):
  model = models.build_model(arch, input_shape, num_outputs, head=head)
  x = _batch(input_shape)

  expected = _predict(model, x)
  assert expected.shape == (2, num_outputs)
  assert expected.dtype == np.float32
  assert np.all(np.isfinite(expected))
  assert model.name == f"{arch}_student"
  assert model.input_shape == (None, *input_shape)
  _assert_only_builtin_layers(model)

  reloaded = _save_and_reload(model, tmp_path / "model.keras")
  assert reloaded.name == model.name
  assert reloaded.count_params() == model.count_params()
  np.testing.assert_allclose(_predict(reloaded, x), expected, rtol=1e-6, atol=1e-6)


def test_layers_and_names():
  model = models.build_model("cnn", (8, 8, 1), 5, name="digits_cnn")
  assert model.name == "digits_cnn"
  assert model.layers[0].name == "image"
  assert model.input.shape == (None, 8, 8, 1)

  logits = model.get_layer("logits")
  assert model.layers[-1] is logits
  assert logits.units == 5
  assert logits.activation is keras.activations.linear
  assert logits.dtype_policy.name == "float32"

  dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
  assert [(d.units, d.activation.__name__) for d in dense] == [
      (1024, "elu"),
      (512, "elu"),
      (256, "elu"),
      (5, "linear"),
  ]
  rates = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
  assert rates == [0.25, 0.25]
  # The cnn's two max-pools leave 2x2x64 of an 8x8 input.
  assert model.get_layer("head_flatten").output.shape == (None, 2 * 2 * 64)


def test_dropout_zero_leaves_dropout_out():
  for head in models.HEADS:
    model = models.build_model("cnn", (8, 8, 1), head=head, dropout=0)
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in model.layers), head
  pooled = models.build_model("cnn", (8, 8, 1), head="pooled", dropout=0.5)
  assert [type(layer).__name__ for layer in pooled.layers[-3:]] == [
      "GlobalAveragePooling2D",
      "Dropout",
      "Dense",
  ]


def test_pooled_head_on_vector_features_skips_pooling():
  model = models.build_model("mlp", (8, 8, 1), 3, head="pooled", dropout=0)
  assert not any(isinstance(l, keras.layers.GlobalAveragePooling2D) for l in model.layers)
  # Flatten(64) -> 256 -> 128 -> logits(3).
  assert model.count_params() == (64 * 256 + 256) + (256 * 128 + 128) + (128 * 3 + 3)


@pytest.mark.parametrize("arch", SMALL)
def test_study_head_is_larger_than_pooled_head_by_the_formula(arch):
  study = models.build_model(arch, (16, 16, 4), 3, head="study")
  pooled = models.build_model(arch, (16, 16, 4), 3, head="pooled")
  flat = study.get_layer("head_flatten").output.shape[-1]
  channels = pooled.get_layer("logits").input.shape[-1]
  assert study.count_params() > pooled.count_params() > 0
  assert study.count_params() - pooled.count_params() == (
      _study_head_params(flat, 3) - (channels * 3 + 3)
  )


def test_width_semantics():
  mlp = models.build_model("mlp", (8, 8, 1), width=64, head="pooled")
  assert [l.units for l in mlp.layers if isinstance(l, keras.layers.Dense)] == [64, 32, 1]

  cnn = models.build_model("cnn", (8, 8, 1), width=8, head="pooled")
  assert [l.filters for l in cnn.layers if isinstance(l, keras.layers.Conv2D)] == [8, 8, 16, 16]

  resnet = models.build_model("resnet18", (8, 8, 1), width=4, head="pooled")
  assert resnet.get_layer("logits").input.shape == (None, 32)


def test_resnet18_is_the_cifar_resnet18():
  model = models.build_model("resnet18", (32, 32, 3), 10, head="pooled", dropout=0)
  # The parameter count of the widely used CIFAR-10 ResNet-18 (kuangliu/pytorch-cifar).
  trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
  assert trainable == 11_173_962
  convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
  # Stem + 8 blocks x 2 convs + 3 projection shortcuts (stages 2-4).
  assert len(convs) == 20
  assert sum("shortcut" in c.name for c in convs) == 3
  assert convs[0].kernel_size == (3, 3) and convs[0].strides == (1, 1)
  assert sum(isinstance(l, keras.layers.Add) for l in model.layers) == 8
  assert not any(isinstance(l, keras.layers.MaxPooling2D) for l in model.layers)
  assert model.get_layer("head_pool").input.shape == (None, 4, 4, 512)


def test_mixed_precision_keeps_float32_logits(tmp_path):
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    model = models.build_model("cnn", (8, 8, 1), 3)
  finally:
    keras.mixed_precision.set_global_policy(previous)
  assert model.get_layer("cnn_block1_conv1").compute_dtype == "float16"
  assert model.get_layer("logits").compute_dtype == "float32"
  x = _batch((8, 8, 1))
  assert model(x, training=False).dtype == "float32"
  reloaded = _save_and_reload(model, tmp_path / "model.keras")
  assert reloaded.get_layer("logits").compute_dtype == "float32"
  np.testing.assert_allclose(_predict(reloaded, x), _predict(model, x), rtol=1e-6, atol=1e-6)


def test_saved_model_loads_without_simclr_distill(tmp_path):
  model = models.build_model("resnet18", (8, 8, 1), 3, width=8)
  x = _batch((8, 8, 1), seed=1)
  model.save(tmp_path / "model.keras")
  np.save(tmp_path / "x.npy", x)
  np.save(tmp_path / "expected.npy", _predict(model, x))

  script = textwrap.dedent(
      """
      import sys
      import keras
      import numpy as np

      model = keras.models.load_model("model.keras")
      got = keras.ops.convert_to_numpy(model(np.load("x.npy"), training=False))
      assert "simclr_distill" not in sys.modules, "loading imported simclr_distill"
      np.testing.assert_allclose(got, np.load("expected.npy"), rtol=1e-5, atol=1e-6)
      print("loaded", model.name, got.shape)
      """
  )
  # Run from tmp_path with no PYTHONPATH so the package is not even importable there.
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  result = subprocess.run(
      [sys.executable, "-c", script],
      cwd=tmp_path,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "loaded resnet18_student (2, 3)" in result.stdout


# ---- Input checks and errors -----------------------------------------------------------------


@pytest.fixture
def no_building(monkeypatch):
  """Makes any attempt to build an architecture's features fail the test."""
  real_get = models.ARCHITECTURES.get

  def build_features(x, width):
    raise AssertionError("the model was built before the input size was checked")

  monkeypatch.setattr(
      models.ARCHITECTURES,
      "get",
      lambda name: dataclasses.replace(real_get(name), build_features=build_features),
  )


@pytest.mark.parametrize("arch", PAPER)
def test_too_small_input_fails_before_building(arch, no_building):
  min_size = PAPER_MIN_SIZE[arch]
  too_small = (min_size - 1, min_size - 1, BANDS)
  with pytest.raises(ValueError, match=f"{arch} needs inputs of at least {min_size}x{min_size}"):
    models.build_model(arch, too_small)
  with pytest.raises(ValueError, match=f"got {min_size - 1}x{min_size - 1}x{BANDS}"):
    models.check_input_size(arch, too_small)
  # One short side is enough to reject.
  with pytest.raises(ValueError, match=arch):
    models.check_input_size(arch, (min_size + 50, min_size - 1, BANDS))
  assert models.check_input_size(arch, (min_size, min_size, BANDS)) is None


def test_too_small_message_lists_architectures_that_fit(no_building):
  with pytest.raises(ValueError) as excinfo:
    models.build_model("Xception", (8, 8, 1))
  assert str(excinfo.value) == (
      "Xception needs inputs of at least 71x71 pixels, got 8x8x1. Resize the data or choose an "
      "architecture that accepts inputs of this size: cnn, mlp, resnet18."
  )
  with pytest.raises(ValueError) as excinfo:
    models.check_input_size("InceptionV3", (40, 40, 10))
  assert str(excinfo.value).endswith(
      "size: ResNet101V2, ResNet152, ResNet50, cnn, mlp, resnet18."
  )
  with pytest.raises(ValueError, match="resnet18 needs inputs of at least 8x8 pixels"):
    models.check_input_size("resnet18", (7, 7, 1))


def test_unknown_architecture_lists_known_names():
  with pytest.raises(KeyError) as excinfo:
    models.build_model("resnet50", (32, 32, 3))
  message = excinfo.value.args[0]
  assert "'resnet50'" in message
  assert all(name in message for name in PAPER + SMALL)
  with pytest.raises(KeyError, match="ResNet50"):
    models.check_input_size("resnet50", (32, 32, 3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"head": "linear"}, "unknown head 'linear'; choose one of study, pooled"),
        ({"num_outputs": 0}, "num_outputs must be an int >= 1, got 0"),
        ({"num_outputs": 2.0}, "num_outputs must be an int >= 1, got 2.0"),
        ({"num_outputs": True}, "num_outputs must be an int >= 1, got True"),
        ({"dropout": 1.0}, r"dropout must be a rate in \[0, 1\), got 1.0"),
        ({"dropout": -0.1}, r"dropout must be a rate in \[0, 1\), got -0.1"),
        ({"width": 0}, "width must be a positive int, got 0"),
        ({"width": 8.5}, "width must be a positive int, got 8.5"),
        ({"input_shape": (8, 8)}, r"input_shape must be three positive ints .* got \(8, 8\)"),
        ({"input_shape": (8, 0, 1)}, r"got \(8, 0, 1\)"),
        ({"input_shape": (8.0, 8, 1)}, r"got \(8.0, 8, 1\)"),
        ({"input_shape": "8x8"}, "got '8x8'"),
        ({"input_shape": 8}, "got 8"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match, no_building):
  kwargs = {"arch": "cnn", "input_shape": (8, 8, 1), **kwargs}
  with pytest.raises(ValueError, match=match):
    models.build_model(**kwargs)


def test_width_is_rejected_for_paper_architectures(no_building):
  with pytest.raises(ValueError, match="ResNet50 has a fixed width, got width=64.*cnn, mlp"):
    models.build_model("ResNet50", (32, 32, BANDS), width=64)


def test_numpy_ints_are_accepted_as_input_shape():
  model = models.build_model("mlp", tuple(np.array([8, 8, 1])), np.int64(2), head="pooled")
  assert model.output.shape == (None, 2)


# ---- Paper architectures (slow) --------------------------------------------------------------


@pytest.fixture(scope="module", params=PAPER)
def paper_model(request):
  """One study-head model per paper architecture at its minimum size with 10 bands."""
  arch = request.param
  size = PAPER_MIN_SIZE[arch]
  input_shape = (size, size, BANDS)
  model = models.build_model(arch, input_shape, 1)
  yield arch, input_shape, model
  keras.backend.clear_session(free_memory=True)


@pytest.mark.slow
def test_paper_architecture_builds(paper_model):
  arch, input_shape, model = paper_model
  assert model.name == f"{arch}_student"
  assert model.layers[0].name == "image"
  assert model.input_shape == (None, *input_shape)
  assert all(layer.trainable for layer in model.layers)
  first_conv = next(l for l in model.layers if isinstance(l, keras.layers.Conv2D))
  assert first_conv.kernel.shape[2] == BANDS
  _assert_only_builtin_layers(model)
  assert model.get_layer("logits").dtype_policy.name == "float32"

  y = _predict(model, _batch(input_shape))
  assert y.shape == (2, 1)
  assert np.all(np.isfinite(y))


@pytest.mark.slow
def test_paper_architecture_train_step(paper_model):
  arch, input_shape, model = paper_model
  model.compile(
      optimizer=keras.optimizers.Adam(1e-3),
      loss=keras.losses.BinaryCrossentropy(from_logits=True),
      # Tracing the train function costs 17 s (Xception) to 85 s (ResNet152) on a 2-core CPU
      # and an eager step 2-6 s. One architecture goes through the traced function that `fit`
      # uses; for the rest the eager step checks the same thing: gradients reach every layer.
      run_eagerly=arch != TRACED_ARCH,
  )
  first_conv = next(l for l in model.layers if isinstance(l, keras.layers.Conv2D))
  watched = {"first conv": first_conv.kernel, "logits": model.get_layer("logits").kernel}
  before = {k: keras.ops.convert_to_numpy(v).copy() for k, v in watched.items()}

  loss = model.train_on_batch(_batch(input_shape), np.array([[0.0], [1.0]], dtype="float32"))

  assert np.isfinite(loss) and loss > 0
  for key, variable in watched.items():
    assert not np.array_equal(keras.ops.convert_to_numpy(variable), before[key]), key


@pytest.mark.slow
def test_paper_architecture_save_and_reload(paper_model, tmp_path):
  arch, input_shape, model = paper_model
  x = _batch(input_shape, seed=2)
  expected = _predict(model, x)
  path = tmp_path / f"{arch}.keras"
  reloaded = _save_and_reload(model, path)
  path.unlink()  # Hundreds of MB with optimizer state; pytest keeps old tmp dirs.
  assert reloaded.count_params() == model.count_params()
  np.testing.assert_allclose(_predict(reloaded, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_paper_pooled_head_on_resnet50():
  study = models.build_model("ResNet50", (32, 32, BANDS), 3, head="study")
  pooled = models.build_model("ResNet50", (32, 32, BANDS), 3, head="pooled")
  # keras.applications.ResNet50(include_top=False) has 23,587,712 parameters on 3 bands; the
  # 7x7x64 stem conv adds 7*7*64 per extra band.
  backbone = 23_587_712 + 7 * 7 * 64 * (BANDS - 3)
  assert pooled.count_params() == backbone + 2048 * 3 + 3
  assert study.count_params() == backbone + _study_head_params(2048, 3)
  assert study.count_params() > pooled.count_params() > 0
  assert _predict(pooled, _batch((32, 32, BANDS))).shape == (2, 3)
