"""tf.data pipelines over prepared data, in the house order.

Training: read (interleaved shards) -> optional cache -> shuffle -> repeat -> batch
(drop_remainder) -> prefetch. Shuffle comes before repeat, as big_vision does, so each epoch
is a full permutation and no example is seen twice before all have been seen once; whole
batches split evenly over replicas. Evaluation: no shuffle, no repeat, the last partial batch
kept. Everything is seeded, and shard interleaving keeps a fixed order, so a seed repeats a run.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from simclr_distill.data import records
from simclr_distill.data import splits as splits_lib


def sized(data: records.PreparedData, ids: Sequence[str],
          labels: bool | Sequence[str] = True) -> tf.data.Dataset:
  """The records of `ids` (with the `labels` fields, see `PreparedData.batches`) with their
  count declared.

  The declared size lets Keras end an evaluation pass without a "ran out of data" warning,
  and a split list naming examples the records lack fails loudly instead of shrinking.
  """
  return data.examples(ids, labels=labels).apply(
      tf.data.experimental.assert_cardinality(len(ids)))


def shuffled(ds: tf.data.Dataset, *, size: int, seed: int, cache: bool = False,
             shuffle_buffer: int = 10_000) -> tf.data.Dataset:
  """cache -> shuffle -> repeat: an endless stream of reshuffled epochs."""
  if cache:
    ds = ds.cache()
  return ds.shuffle(min(shuffle_buffer, max(size, 1)), seed=seed,
                    reshuffle_each_iteration=True).repeat()


def batched(ds: tf.data.Dataset, batch_size: int, *, training: bool) -> tf.data.Dataset:
  return ds.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)


def make_split_dataset(data: records.PreparedData, scheme: str, split: str, *,
                       task: str = "binary", batch_size: int = 32, training: bool = False,
                       seed: int = 0, cache: bool = False) -> tf.data.Dataset:
  """(image, label) batches of one split list (e.g. "train_10", "val_10", "test").

  Args:
    data: opened prepared data (its read options apply: bands, size, standardisation).
    scheme: labelling scheme, "basic" or "expanded".
    split: a split list name of that scheme.
    task: "binary" (the scheme's irrigated label) or "multiclass".
    batch_size: examples per batch.
    training: shuffle, repeat and drop the last partial batch.
    seed: shuffle seed.
    cache: keep decoded examples in memory after the first pass.

  Raises:
    ValueError: for an unknown scheme, split or label.
  """
  lists = data.splits(scheme)
  if split not in lists:
    raise ValueError(f"scheme {scheme} of {data.root} has no split {split!r}; it has "
                     f"{', '.join(sorted(lists))}")
  key = data.label_key(scheme, task)
  ds = sized(data, lists[split]).map(lambda ex: (ex["image"], ex[key]),
                                     num_parallel_calls=tf.data.AUTOTUNE)
  if training:
    ds = shuffled(ds, size=len(lists[split]), seed=seed, cache=cache)
  elif cache:
    ds = ds.cache()
  return batched(ds, batch_size, training=training)


def make_unlabelled_dataset(data: records.PreparedData, scheme: str, *, protocol: str = "holdout",
                            batch_size: int = 32) -> tf.data.Dataset:
  """{"id", "image"} batches of the pool a student may learn from without labels.

  The ids let cached teacher logits be joined back to the examples (see `labelling`).
  """
  others = [data.splits(s) for s in data.schemes if s != scheme]
  ids = splits_lib.unlabelled_pool(data.ids(), data.splits(scheme), protocol, others)
  ds = sized(data, ids).map(lambda ex: {"id": ex["id"], "image": ex["image"]},
                            num_parallel_calls=tf.data.AUTOTUNE)
  return batched(ds, batch_size, training=False)
