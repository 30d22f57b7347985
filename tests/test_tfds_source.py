"""Tests of the TFDS source, on TFDS's mock data (offline, random content, real feature spec)."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from simclr_distill.data import bigearthnet
from simclr_distill.data import tfds_source as T

# The study's bands (10 m first, then 20 m); the 20 m ones exercise the upsampling.
STUDY_BANDS = ("B04", "B03", "B02", "B08", "B05", "B06", "B07", "B8A", "B11", "B12")


def _mock(num_examples, **kwargs):
  # USE_CODE: no metadata files exist here, and the builder code alone gives the feature spec.
  return tfds.testing.mock_data(num_examples=num_examples,
                                policy=tfds.testing.MockPolicy.USE_CODE, **kwargs)


def _tfds_info(tmp_path):
  return tfds.builder(T.TFDS_NAME, data_dir=str(tmp_path)).info


def _expected_channel(plane: np.ndarray) -> np.ndarray:
  """The float value a channel should round to, computed with TensorFlow, not the module."""
  plane = plane.astype(np.float32)
  if plane.shape != (bigearthnet.SIZE, bigearthnet.SIZE):
    # antialias=True computes exact Keys weights; without it TF samples a 1024-entry table.
    plane = tf.image.resize(plane[None, :, :, None], (bigearthnet.SIZE, bigearthnet.SIZE), method="bicubic",
                            antialias=True).numpy()[0, :, :, 0]
  return np.clip(plane, 0, 65535)


def test_band_and_class_constants_match_the_tfds_builder(tmp_path):
  features = _tfds_info(tmp_path).features
  assert T.TFDS_BANDS == tuple(k for k in features.keys() if k.startswith("B"))
  assert all(features[b].np_dtype == np.float32 for b in T.TFDS_BANDS)
  tfds_names = features["labels"].feature.names
  assert len(T.CLASSES) == len(set(T.CLASSES)) == 43
  assert sorted(T.CLASSES) == sorted(tfds_names)
  assert (T.CLASSES[0], T.CLASSES[12], T.CLASSES[42]) == (
      "Continuous urban fabric", "Permanently irrigated land", "Sea and ocean")
  # TFDS sorts the names alphabetically: its index 12 is not the study's positive class.
  assert tfds_names[12] == "Discontinuous urban fabric"
  assert tfds_names.index("Permanently irrigated land") == 29


@pytest.mark.parametrize("n_in", [60, 20])
def test_bicubic_matrix_agrees_with_tf_resize(n_in):
  plane = np.random.default_rng(n_in).integers(0, 20000, (n_in, n_in)).astype(np.float64)
  m = bigearthnet.bicubic_matrix(n_in)
  assert m.shape == (bigearthnet.SIZE, n_in)
  np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-12)
  tf_plane = tf.image.resize(plane[None, :, :, None].astype(np.float32), (bigearthnet.SIZE, bigearthnet.SIZE),
                             method="bicubic", antialias=True).numpy()[0, :, :, 0]
  np.testing.assert_allclose(m @ plane @ m.T, tf_plane, atol=0.1)


def test_patches_match_the_tfds_examples(tmp_path):
  with _mock(num_examples=4):
    patches = list(T.iter_tfds_patches(data_dir=str(tmp_path), bands=STUDY_BANDS))
    direct = list(tfds.as_numpy(tfds.load(T.TFDS_NAME, split="train", data_dir=str(tmp_path),
                                          download=False)))
  tfds_names = _tfds_info(tmp_path).features["labels"].feature.names
  assert len(patches) == len(direct) == 4
  for (name, image, multi_hot), ex in zip(patches, direct):
    assert isinstance(name, str) and name == ex["filename"].decode()
    assert image.shape == (120, 120, 10) and image.dtype == np.uint16
    for k, band in enumerate(STUDY_BANDS):
      # Mock values lie in [0, 1), so channels are 0/1 maps: a wrong band mismatches half the
      # pixels, and a negative bicubic overshoot that was not clipped would wrap to 65535.
      np.testing.assert_array_less(np.abs(image[..., k] - _expected_channel(ex[band])),
                                   0.5 + 1e-3, err_msg=band)
    assert multi_hot.shape == (43,) and multi_hot.dtype == np.int64
    expected = sorted({T.CLASSES.index(tfds_names[i]) for i in ex["labels"]})
    np.testing.assert_array_equal(np.flatnonzero(multi_hot), expected)
    assert set(multi_hot.tolist()) <= {0, 1}


def test_tfds_label_order_on_request(tmp_path):
  tfds_names = _tfds_info(tmp_path).features["labels"].feature.names
  with _mock(num_examples=2):
    patches = T.iter_tfds_patches(data_dir=str(tmp_path), bands=("B02",), classes=tfds_names)
    direct = tfds.as_numpy(tfds.load(T.TFDS_NAME, split="train", data_dir=str(tmp_path),
                                     download=False))
    for (_, _, multi_hot), ex in zip(patches, direct):
      np.testing.assert_array_equal(np.flatnonzero(multi_hot), np.unique(ex["labels"]))


def test_real_scale_values_are_exact_upsampled_and_clipped(tmp_path):
  rng = np.random.default_rng(0)
  info = _tfds_info(tmp_path)
  checker = np.indices((60, 60)).sum(0) % 2 * 65535.0  # Overshoots both ends when upsampled.
  example = {b: rng.integers(0, 28000, info.features[b].shape).astype(np.float32)
             for b in T.TFDS_BANDS}
  example.update(B05=checker, filename="S2A_MSIL2A_20170613T101031_0_45", labels=[12, 29])

  def as_dataset(self, *args, **kwargs):
    del self, args, kwargs
    return tf.data.Dataset.from_tensors({k: tf.constant(v) for k, v in example.items()})

  with _mock(num_examples=1, as_dataset_fn=as_dataset):
    [(name, image, multi_hot)] = T.iter_tfds_patches(data_dir=str(tmp_path),
                                                     bands=("B8A", "B05", "B02", "B01"))
  assert name == "S2A_MSIL2A_20170613T101031_0_45"
  np.testing.assert_array_equal(image[..., 2], example["B02"].astype(np.uint16))
  assert image[..., 1].min() == 0 and image[..., 1].max() == 65535
  m = bigearthnet.bicubic_matrix(60)
  upsampled = m @ checker @ m.T
  assert upsampled.min() < -1000 and upsampled.max() > 66535  # The clip is needed.
  np.testing.assert_array_equal(image[..., 1], np.clip(np.rint(upsampled), 0, 65535))
  for k, band in ((0, "B8A"), (3, "B01")):  # 60x60 and 20x20 bands.
    # Rounding plus TensorFlow's float32 error at values near 28000.
    np.testing.assert_array_less(np.abs(image[..., k] - _expected_channel(example[band])), 0.55)
  # TFDS's 12 and 29 are Discontinuous urban fabric and Permanently irrigated land.
  np.testing.assert_array_equal(np.flatnonzero(multi_hot), [1, 12])


def test_streams_without_reading_the_split(tmp_path):
  with _mock(num_examples=1_000_000):
    start = time.perf_counter()
    patches = T.iter_tfds_patches(data_dir=str(tmp_path), bands=("B04", "B11"))
    assert iter(patches) is patches
    first = list(itertools.islice(patches, 3))
    assert time.perf_counter() - start < 20  # A full read would take hours.
  assert [image.shape for _, image, _ in first] == [(120, 120, 2)] * 3


@pytest.mark.parametrize("bands, message", [
    (("B04", "B10"), "unknown band.*'B10'"),
    (("B04", "b03"), "unknown band.*'b03'"),
    (("B04", "B04"), "more than once"),
    ((), "empty"),
    ("B04", "sequence of band names"),
])
def test_bad_bands_are_rejected_before_any_reading(tmp_path, bands, message):
  with pytest.raises(ValueError, match=message) as error:
    T.iter_tfds_patches(data_dir=str(tmp_path / "absent"), bands=bands)
  if "unknown" in message:
    assert ", ".join(T.TFDS_BANDS) in str(error.value)


def test_wrong_class_names_are_rejected(tmp_path):
  classes = list(T.CLASSES)
  classes[5] = "Airport"
  with pytest.raises(ValueError, match="missing \\['Airports'\\], not in TFDS \\['Airport'\\]"):
    T.iter_tfds_patches(data_dir=str(tmp_path), bands=("B04",), classes=classes)


def test_unprepared_data_dir_says_how_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError, match="tfds build bigearthnet/all") as error:
    T.iter_tfds_patches(data_dir=str(tmp_path), bands=STUDY_BANDS)
  assert str(tmp_path) in str(error.value) and "archive" in str(error.value)


def test_rgb_config_only_names_the_missing_bands(tmp_path):
  rgb = tfds.builder("bigearthnet/rgb", data_dir=str(tmp_path))
  # The metadata files are what TFDS checks to call a dataset prepared.
  rgb.data_path.mkdir(parents=True)
  rgb.info.write_to_directory(rgb.data_path)
  with pytest.raises(ValueError, match="bigearthnet/rgb") as error:
    T.iter_tfds_patches(data_dir=str(tmp_path), bands=STUDY_BANDS)
  assert "B04, B03, B02, B08, B05, B06, B07, B8A, B11, B12 are missing" in str(error.value)
  assert "tfds build bigearthnet/all" in str(error.value)


def test_tfds_patches_convert_into_prepared_records(tmp_path):
  from simclr_distill.data import records

  with tfds.testing.mock_data(num_examples=60, policy=tfds.testing.MockPolicy.USE_CODE):
    patches = T.iter_tfds_patches(bands=bigearthnet.BANDS)
    data = bigearthnet.prepare_from_patches(patches, tmp_path / "prepared", source="tfds",
                                            examples_per_shard=25)
  assert data.manifest["num_examples"] == 60 and len(data.shards) == 3
  assert data.image_shape == (120, 120, 10) and data.manifest["image_dtype"] == "uint16"
  reopened = records.PreparedData.open(tmp_path / "prepared", standardize=False)
  first = next(iter(reopened.examples()))
  assert first["image"].shape == (120, 120, 10) and first["labels"].shape == (43,)
  assert sorted(data.ids()) == sorted(ex["id"].numpy().decode() for ex in reopened.examples())
