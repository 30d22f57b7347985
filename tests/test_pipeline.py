import numpy as np
import pytest

from simclr_distill.data import digits, pipeline


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return digits.prepare_digits(tmp_path_factory.mktemp("digits"), num_shards=3, percents=(10, 100))


def _ids_of(ds, key=None):
  return [x for batch in ds for x in (batch[key] if key else batch).numpy().tolist()]


def test_training_stream_is_whole_reshuffled_epochs_and_seeded(data):
  n = len(data.splits("basic")["train_100"])
  ds = pipeline.make_split_dataset(data, "basic", "train_100", batch_size=16, training=True, seed=3)
  batches = list(ds.take(2 * (n // 16)))
  assert all(b[0].shape == (16, 8, 8, 1) for b in batches)  # drop_remainder
  again = list(pipeline.make_split_dataset(data, "basic", "train_100", batch_size=16,
                                           training=True, seed=3).take(3))
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
  other = next(iter(pipeline.make_split_dataset(data, "basic", "train_100", batch_size=16,
                                                training=True, seed=4)))
  assert not np.array_equal(other[0].numpy(), batches[0][0].numpy())
  labels = np.concatenate([b[1].numpy() for b in batches[: n // 16]])
  assert set(labels.tolist()) == {0, 1}


def test_evaluation_keeps_every_example_once_in_order(data):
  test = data.splits("basic")["test"]
  ds = pipeline.make_split_dataset(data, "basic", "test", batch_size=16)
  assert sum(int(b[0].shape[0]) for b in ds) == len(test)
  assert ds.cardinality().numpy() == -(-len(test) // 16)  # known size, last batch kept
  first = [b[1].numpy().tolist() for b in ds]
  assert first == [b[1].numpy().tolist() for b in ds]
  with pytest.raises(ValueError, match="has no split 'train_7'"):
    pipeline.make_split_dataset(data, "basic", "train_7")


def test_unlabelled_stream_yields_ids_outside_every_test_and_val_list(data):
  ids = {i.decode() for i in _ids_of(pipeline.make_unlabelled_dataset(data, "basic", batch_size=64), "id")}
  held_out = set()
  for scheme in data.schemes:
    held_out |= {i for name, v in data.splits(scheme).items() if name == "test" or name.startswith("val_") for i in v}
  assert ids == set(data.ids()) - held_out
  original = {i.decode() for i in _ids_of(
      pipeline.make_unlabelled_dataset(data, "basic", protocol="original"), "id")}
  assert original == set(data.splits("basic")["test"])
