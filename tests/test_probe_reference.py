"""Stage 1's probe of a frozen encoder, and the classical semi-supervised reference."""

import keras
import numpy as np
import pandas as pd
import pytest

from simclr_distill import probe, reference, results, stats
from simclr_distill.data import digits, records


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("digits")
  digits.prepare_digits(root / "data", num_shards=2)
  return records.PreparedData.open(root / "data")


class Pixels(keras.layers.Layer):
  """The identity, as a named layer: a "network" whose features are the raw pixels."""

  def call(self, x):
    return x


def _pixel_network():
  inputs = keras.Input((8, 8, 1), name="image")
  return keras.Model(inputs, Pixels(name="projection_512")(keras.layers.Flatten()(inputs)))


def _constant_network():
  inputs = keras.Input((8, 8, 1), name="image")
  flat = keras.layers.Flatten()(inputs)
  zero = keras.layers.Dense(4, kernel_initializer="zeros", bias_initializer="ones",
                            name="projection_512")(flat)
  return keras.Model(inputs, zero)


def test_probe_scores_frozen_features_on_validation_and_never_reads_the_test_list(data, tmp_path):
  config = probe.ProbeConfig(schemes=("expanded",), split_percents=(10,))
  rows = probe.probe_encoder(_pixel_network(), data, tmp_path, encoder="pixels",
                             encoder_optimizer="adam", arch="identity", settings={"seed": 0},
                             config=config, global_batch=128)
  assert len(rows) == 1
  row = rows[0]
  lists = data.splits("expanded")
  assert row["val_examples"] == len(lists["val_100"]) and row["test_examples"] == 0
  assert row["pretrain_chance_loss"] == pytest.approx(np.log(255))
  # Independent check: the same probes with scikit-learn on the pixels themselves.
  from sklearn.linear_model import LogisticRegression
  from sklearn.neighbors import KNeighborsClassifier
  from sklearn.preprocessing import StandardScaler
  ids, images, classes = digits.load_digits_arrays()
  index = {i: k for k, i in enumerate(ids)}
  x = images.reshape(len(ids), -1)
  y = digits.scheme_labels(classes, "expanded")
  train = [index[i] for i in sorted(lists["train_10"])]
  val = [index[i] for i in sorted(lists["val_100"])]
  unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  knn = KNeighborsClassifier(5).fit(unit[train], y[train]).score(unit[val], y[val])
  scaler = StandardScaler().fit(x[train])
  linear = LogisticRegression(max_iter=5000).fit(scaler.transform(x[train]), y[train]).score(
      scaler.transform(x[val]), y[val])
  assert row["probe_knn_accuracy"] == pytest.approx(knn)
  assert row["probe_linear_accuracy"] == pytest.approx(linear)
  saved = pd.read_parquet(tmp_path / results.RUNS / row["run_id"] / probe.PREDICTIONS)
  assert set(saved["id"]) == set(lists["val_100"]) and not set(saved["id"]) & set(lists["test"])
  # Done once: a second call finds the row and probes nothing.
  assert probe.probe_encoder(_pixel_network(), data, tmp_path, encoder="pixels",
                             encoder_optimizer="adam", arch="identity", settings={"seed": 0},
                             config=config) == []


def test_a_featureless_encoder_probes_at_chance_and_the_comparison_says_so(data, tmp_path):
  config = probe.ProbeConfig(schemes=("expanded",), split_percents=(10,))
  common = dict(data=data, workdir=tmp_path, arch="identity", config=config)
  good = probe.probe_encoder(_pixel_network(), encoder="pixels", encoder_optimizer="adam",
                             settings={"seed": 0}, **common)[0]
  dead = probe.probe_encoder(_constant_network(), encoder="none", encoder_optimizer="",
                             settings={"seed": 1}, **common)[0]
  assert dead["probe_linear_accuracy"] == pytest.approx(0.5, abs=0.01)  # Balanced val list.
  table = results.read_rows([tmp_path])
  frame = stats.study_comparisons(table, stats.workdir_reader(tmp_path))
  probe_rows = frame[frame["question"].str.startswith("encoders: pretrained vs random init")]
  assert len(probe_rows) == 1
  row = probe_rows.iloc[0]
  assert row["metric"] == "accuracy" and row["excludes_zero"]
  assert row["difference"] == pytest.approx(good["probe_linear_accuracy"] - dead["probe_linear_accuracy"])


def test_label_spreading_reference_uses_the_students_pool_and_scores_the_test_list(data, tmp_path):
  row = reference.label_spreading(data, tmp_path, scheme="expanded", percent=3)
  assert (row["stage"], row["arch"], row["status"]) == ("reference", "label_spreading", "ok")
  lists = data.splits("expanded")
  assert row["test_examples"] == len(lists["test"])
  frame = pd.read_parquet(tmp_path / results.RUNS / row["run_id"] / "predictions.parquet")
  assert set(frame["id"]) == set(lists["test"])
  # Independently, with scikit-learn on the same labelled split and pool.
  from sklearn.semi_supervised import LabelSpreading
  from simclr_distill.data import splits as splits_lib
  ids, images, classes = digits.load_digits_arrays()
  index = {i: k for k, i in enumerate(ids)}
  x = images.reshape(len(ids), -1)
  y = digits.scheme_labels(classes, "expanded")
  pool = splits_lib.unlabelled_pool(ids, lists, "holdout", [data.splits("basic")])
  labelled = set(lists["train_3"])
  order = [*sorted(labelled), *sorted(set(pool) - labelled)]
  targets = np.array([y[index[i]] if i in labelled else -1 for i in order])
  model = LabelSpreading(kernel="knn", n_neighbors=10, max_iter=1000).fit(
      x[[index[i] for i in order]], targets)
  test = [index[i] for i in frame["id"]]
  from sklearn.metrics import f1_score
  assert row["f1"] == pytest.approx(f1_score(y[test], model.predict(x[test])))
  assert row["f1"] > 0.8  # Far above chance: the pool's structure carries the labels.
  again = reference.label_spreading(data, tmp_path, scheme="expanded", percent=3)  # Read back.
  assert again["run_id"] == row["run_id"] and again["f1"] == row["f1"]


def test_large_images_are_pooled_to_the_feature_budget():
  assert reference.pooling_factor((120, 120, 10), 1024) == 12  # 10x10x10 = 1000 values.
  assert reference.pooling_factor((8, 8, 1), 1024) == 1


def test_a_few_ids_among_many_records_stream_without_empty_batches(data):
  # 12 ids drawn from the last shard only: every earlier run of records holds none of them.
  # An empty batch used to reach the network, which fails inside a convolution (oneDNN: "input
  # depth must be evenly divisible by filter depth"): a probe of a small split crashed.
  ids = data.ids()[-12:]
  sizes = [int(b["id"].shape[0]) for b in data.batches(256, ids)]
  assert sum(sizes) == 12 and min(sizes) > 0
  keras.utils.set_random_seed(0)
  inputs = keras.Input(data.image_shape)
  x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
  x = keras.layers.Conv2D(4, 3, padding="same", name="conv2")(x)
  network = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pooled")(x))
  got_ids, feats, _ = probe.features(network, data, ids, "pooled")
  assert sorted(got_ids) == sorted(ids) and feats.shape == (12, 4)
