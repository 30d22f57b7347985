"""The one place that works around Keras internals: what a `keras.Model` subclass trained
under tf.distribute needs so that it runs on a multi-worker cluster and repeats with a seed.
Both training models (`training.distiller.Distiller`, `simclr.SimCLR`) derive from
`ClusterSafeModel`; if a Keras upgrade fixes these, this module is what changes.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
  """Whether `strategy` spans several processes: a MultiWorkerMirroredStrategy whose TF_CONFIG
  names more than one task (the test Keras' trainer applies to take its multi-worker paths)."""
  return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and
          strategy.extended._in_multi_worker_mode())  # pylint: disable=protected-access


def cluster_logs(strategy: tf.distribute.Strategy, logs: dict) -> dict:
  """A step's logs as Keras can average them over `strategy`.

  Keras (3.15) averages a step's logs over a multi-worker cluster with
  `strategy.reduce(MEAN, value, axis=0)`, which fails on a scalar ("Invalid reduction
  dimension 0 for input with 0 dimensions"; tensorflow/tensorflow#72388): as [1] vectors they
  reduce to the scalar mean over the replicas, as on one worker.
  """
  if not is_multi_worker(strategy):
    return logs
  return {name: tf.reshape(value, [1]) for name, value in logs.items()}


class ClusterSafeModel(keras.Model):
  """A `keras.Model` that builds from its dataset's element spec and logs scalars that a
  multi-worker cluster can average (see `cluster_logs`; subclasses overriding
  `compute_metrics` apply it themselves)."""

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    # Keras (3.15) builds a model made under a strategy from the first batch of `fit` and
    # `evaluate`: it opens an iterator, takes a batch, averages it over the replicas with
    # `strategy.reduce` and opens a fresh iterator for training. Under
    # MultiWorkerMirroredStrategy that reduce fails on a nested batch ("Attempt to convert a
    # value (PerReplica...)"), and under any strategy the abandoned iterator's prefetching
    # draws reshuffle seeds from the stream's shared generator at random times, so the
    # training order (and a seeded run's result) varies. Only the batch's shapes and dtypes
    # matter: the dataset's element spec gives them without opening an iterator.
    adapter = getattr(iterator, "data_adapter", None)
    if adapter is not None and data_batch is None and self._distribute_strategy is not None:
      data_batch = adapter.get_tf_dataset().element_spec
      iterator = None
    super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

  def compute_metrics(self, x, y, y_pred, sample_weight=None):
    return cluster_logs(self.distribute_strategy,
                        super().compute_metrics(x, y, y_pred, sample_weight))
