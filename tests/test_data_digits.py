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
