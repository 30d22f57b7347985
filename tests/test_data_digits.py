import json

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from simclr_distill.data import digits, records


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  return digits.prepare_digits(tmp_path_factory.mktemp("digits"), num_shards=3)


def test_records_hold_the_real_digits_after_the_documented_transform(prepared):
  raw = load_digits()
  seen = {}
  for ex in prepared.examples():
    seen[ex["id"].numpy().decode()] = ex
  assert len(seen) == len(raw.images) == prepared.manifest["num_examples"] == 1797
  for i in (0, 17, 1796):
    ex = seen[f"digits-{i:04d}"]
    np.testing.assert_array_equal(ex["image"].numpy()[..., 0], (raw.images[i] / 16).astype(np.float32))
    assert ex["image"].shape == (8, 8, 1) and ex["image"].dtype == tf.float32
    assert int(ex["class"]) == raw.target[i]
    assert int(ex["label_basic"]) == int(raw.target[i] == 8)
    assert int(ex["label_expanded"]) == int(raw.target[i] in (3, 5, 8, 9))
  assert sorted(prepared.ids()) == sorted(seen)


def test_splits_follow_the_study_procedure(prepared):
  classes = load_digits().target
  label = {f"digits-{i:04d}": int(c == 8) for i, c in enumerate(classes)}
  splits = prepared.splits("basic")
  positives = int((classes == 8).sum())
  assert len(splits["test"]) + len(splits["train_100"]) + len(splits["val_100"]) == 2 * positives
  assert sum(label[i] for i in splits["test"]) * 2 == len(splits["test"])
  assert len(splits["train_1"]) == 4  # min_per_class=2 keeps both classes in the 1% split
  assert prepared.manifest["split_sizes"]["basic"]["test"] == len(splits["test"])


def test_id_filter_streams_only_the_requested_examples(prepared):
  wanted = prepared.splits("basic")["val_10"]
  got = [ex["id"].numpy().decode() for ex in prepared.examples(wanted)]
  assert sorted(got) == sorted(wanted)


def test_reopening_skips_and_bad_directories_are_explained(prepared, tmp_path):
  again = digits.prepare_digits(prepared.root)
  assert again.manifest == prepared.manifest
  with pytest.raises(FileNotFoundError, match="not a prepared data directory"):
    records.PreparedData.open(tmp_path)
  (tmp_path / records.MANIFEST).write_text(json.dumps({**prepared.manifest, "shards": ["records/nope"]}))
  with pytest.raises(ValueError, match="missing shard"):
    records.PreparedData.open(tmp_path)
  with pytest.raises(ValueError, match="no labelling scheme 'rice'"):
    prepared.splits("rice")


def _tensorflow_example(example_id, image, labels, dtype):
  feature = {
      "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[example_id.encode()])),
      "image": tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[np.ascontiguousarray(image, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()])),
  }
  for key, value in labels.items():
    feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(
        value=[int(v) for v in np.atleast_1d(value)]))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
      deterministic=True)


def test_records_written_without_tensorflow_are_tensorflows_bytes(tmp_path):
  # Conversion workers encode and frame records without TensorFlow (data/tfrecord.py): the
  # bytes must be what tf.train.Example and TFRecordWriter make, or resumed and fresh
  # conversions (and the digests of the data) would differ.
  from simclr_distill.data import tfrecord

  rng = np.random.default_rng(0)
  cases = [("T11SKA_r00000_c00120", rng.integers(0, 65535, (120, 120, 10)), {}, "uint16"),
           ("S2A_1", rng.integers(0, 65535, (120, 120, 10)),
            {"label_basic": 1, "label_expanded": 0, "labels": np.eye(43, dtype=np.int64)[12]},
            "uint16"),
           ("digit-0001", rng.random((8, 8, 1)), {"class": 7, "label_basic": 0}, "float32"),
           ("négatif", rng.random((2, 2, 1)), {"a": -3, "b": 2 ** 40, "empty": []}, "float32")]
  ours = [tfrecord.encode_example(*case) for case in cases]
  assert ours == [_tensorflow_example(*case) for case in cases]
  tfrecord.write_shard(tmp_path / "ours.tfrecord", ours)
  with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
    for record in ours:
      writer.write(record)
  assert (tmp_path / "ours.tfrecord").read_bytes() == (tmp_path / "tf.tfrecord").read_bytes()
  assert [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "ours.tfrecord"))] == ours
